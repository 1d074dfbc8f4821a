"""A sweep file: what to search over, how, for how long, judged by which metric.

    method: bayes                    # bayes (TPE) | random | grid
    metric: {name: val_cer, goal: minimize}   # real_val_cer when the base config has data.real_val
    base_config: configs/smoke.yaml  # the training config every trial starts from
    overrides: [loop.progress=false] # fixed dotted overrides on top of it (optional)
    parameters:                      # any training-config key, dotted
      optim.lr: {log_uniform: [1.0e-4, 1.0e-2]}
      optim.warmup: {uniform: [0.0, 0.3]}
      data.batch_size: {int: [4, 16]}
      model.options.lstm_hidden: {choice: [32, 64]}
    trials: 8
    budget: {epochs: 2}              # per trial: {epochs: E} and/or {minutes: M}
    pruner: {type: median, n_startup_trials: 2, n_warmup_steps: 1}   # or none, threshold, ...

The file is read strictly: an unknown key, a distribution that is not one of the four, a parameter
that is not a key of the training config, or a value the config would refuse fails as the file loads,
with the file and the key named. Nothing here imports Optuna.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textrec.config import ConfigError, read_yaml

METHODS = ("bayes", "random", "grid")
METRICS = ("val_cer", "real_val_cer")
GOALS = ("minimize",)  # error rates only go one way
DISTRIBUTIONS = ("log_uniform", "uniform", "int", "choice")
# Pruners and the options each takes (their Optuna constructor's keyword arguments).
PRUNERS = {
    "none": (),
    "median": ("n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "percentile": ("percentile", "n_startup_trials", "n_warmup_steps", "interval_steps", "n_min_trials"),
    "threshold": ("lower", "upper", "n_warmup_steps", "interval_steps"),
    "successive_halving": ("min_resource", "reduction_factor", "min_early_stopping_rate"),
    "hyperband": ("min_resource", "max_resource", "reduction_factor"),
}
TOP_KEYS = ("name", "method", "metric", "base_config", "overrides", "parameters", "trials", "budget", "pruner",
            "seed", "startup_trials", "parallel_trials", "max_failed_trials", "experiment", "katib")
KATIB_KEYS = ("namespace", "image", "cpu", "memory", "gpus", "service_account", "env")
Scalar = bool | int | float | str | None


class SweepError(ConfigError):
    """A sweep file that cannot be run; the message names the file and the key at fault."""


@dataclass(frozen=True)
class Param:
    """One searched key: ``kind`` is a name of :data:`DISTRIBUTIONS`; ``low``/``high`` for the ranges,
    ``choices`` for ``choice`` (scalars, or lists and mappings written as compact JSON text)."""

    key: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    choices: tuple[Scalar, ...] = ()

    @property
    def log(self) -> bool:
        return self.kind == "log_uniform"

    def grid(self) -> list[Scalar]:
        """The values a grid search visits (only ``choice`` and ``int`` have finitely many)."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return list(range(int(self.low), int(self.high) + 1))
        raise SweepError(f"parameters.{self.key}: a grid search needs choice or int values, not {self.kind}")

    def corners(self) -> list[Scalar]:
        """Values at the ends of the range (every value of a choice): what loading checks."""
        if self.kind == "choice":
            return list(self.choices)
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


@dataclass(frozen=True)
class Pruner:
    type: str = "median"
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class KatibSettings:
    """How a Katib trial's Job runs: namespace, image ("" = the component image), resources, env."""

    namespace: str = "kubeflow"
    image: str = ""
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = 0
    service_account: str = ""
    env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SweepSpec:
    name: str
    method: str
    metric: str
    base_config: Path
    parameters: tuple[Param, ...]
    trials: int
    budget_epochs: int = 0
    budget_minutes: float = 0.0
    overrides: tuple[str, ...] = ()
    pruner: Pruner = field(default_factory=Pruner)
    seed: int = 0
    startup_trials: int = 0  # random trials before TPE models the results; 0: a third of the trials (2..10)
    parallel_trials: int = 1
    max_failed_trials: int = 3
    experiment: str = "textrec-sweeps"
    katib: KatibSettings = field(default_factory=KatibSettings)
    source: str = ""  # the file it came from, for messages

    @property
    def goal(self) -> str:
        return "minimize"

    def budget_overrides(self) -> list[str]:
        out = []
        if self.budget_epochs:
            out.append(f"loop.epochs={self.budget_epochs}")
        if self.budget_minutes:
            out.append(f"loop.max_minutes={self.budget_minutes}")
        return out

    def trial_overrides(self, values: Mapping[str, Scalar]) -> list[str]:
        """Every override of one trial, in order: the fixed ones, the budget, then its values."""
        return [*self.overrides, *self.budget_overrides(), *(f"{k}={value_text(v)}" for k, v in values.items())]

    def train_config(self, values: Mapping[str, Scalar]):
        """The TrainConfig of a trial with these values."""
        from textrec.training.config import load_config

        return load_config(self.base_config, self.trial_overrides(values))

    def n_startup(self) -> int:
        return self.startup_trials or min(10, max(2, self.trials // 3))

    def grid_size(self) -> int:
        return math.prod(len(p.grid()) for p in self.parameters)


def value_text(value: Scalar) -> str:
    """A value as an override's text: ``loop.amp=off``, ``optim.lr=0.001``, ``x=true``, ``c=[8,16]``.

    >>> [value_text(v) for v in (0.001, 3, True, "off", None)]
    ['0.001', '3', 'true', 'off', 'null']
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _choice_value(v: Any, where: str) -> Scalar:
    if v is None or isinstance(v, bool | int | float | str):
        return v
    if isinstance(v, list | dict):  # e.g. model.options.channels: a list is one choice, as flow text
        return json.dumps(v, separators=(",", ":"))
    raise SweepError(f"{where}: a choice must be a number, string, boolean, list or mapping, got {v!r}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        raise SweepError(f"{where}: expected a finite number, got {v!r}")
    return float(v)


def parse_param(key: str, body: Any, where: str) -> Param:
    """``{log_uniform: [a, b]}``, ``{uniform: [a, b]}``, ``{int: [a, b]}`` or ``{choice: [...]}``."""
    here = f"{where}parameters.{key}"
    if not isinstance(body, Mapping) or len(body) != 1:
        raise SweepError(f"{here}: expected one of {{{', '.join(f'{d}: ...' for d in DISTRIBUTIONS)}}}, "
                         f"got {body!r}")
    kind, args = next(iter(body.items()))
    if kind not in DISTRIBUTIONS:
        raise SweepError(f"{here}: unknown distribution {kind!r}; expected one of {', '.join(DISTRIBUTIONS)}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise SweepError(f"{here}.choice: expected a non-empty list of values, got {args!r}")
        choices = tuple(_choice_value(v, f"{here}.choice[{i}]") for i, v in enumerate(args))
        if len(set(map(repr, choices))) != len(choices):
            raise SweepError(f"{here}.choice: the values repeat: {list(args)}")
        return Param(key, kind, choices=choices)
    if not isinstance(args, list) or len(args) != 2:
        raise SweepError(f"{here}.{kind}: expected [low, high], got {args!r}")
    low, high = (_number(v, f"{here}.{kind}") for v in args)
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise SweepError(f"{here}.int: expected whole numbers, got {args!r}")
    if not low < high:
        raise SweepError(f"{here}.{kind}: low must be below high, got {args!r}")
    if kind == "log_uniform" and low <= 0:
        raise SweepError(f"{here}.log_uniform: needs low > 0 (a logarithmic range), got {args!r}")
    return Param(key, kind, low, high)


def _strict_keys(data: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    for key in data:
        if key not in allowed:
            raise SweepError(f"{where}unknown key {key!r}; expected one of: {', '.join(allowed)}")


def _int(data: Mapping[str, Any], key: str, where: str, default: int, minimum: int) -> int:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepError(f"{where}{key}: expected an integer >= {minimum}, got {value!r}")
    return value


def _pruner(body: Any, where: str) -> Pruner:
    if body is None or body == "none":
        return Pruner("none")
    if isinstance(body, str):
        body = {"type": body}
    if not isinstance(body, Mapping) or "type" not in body:
        raise SweepError(f"{where}pruner: expected {{type: {'|'.join(PRUNERS)}, ...options}}, got {body!r}")
    kind = body["type"]
    if kind not in PRUNERS:
        raise SweepError(f"{where}pruner.type: unknown pruner {kind!r}; expected one of {', '.join(PRUNERS)}")
    options = {k: v for k, v in body.items() if k != "type"}
    for k in options:
        if k not in PRUNERS[kind]:
            raise SweepError(f"{where}pruner.{k}: not an option of the {kind} pruner; it takes "
                             f"{', '.join(PRUNERS[kind]) or 'none'}")
    return Pruner(kind, options)


def _budget(body: Any, where: str) -> tuple[int, float]:
    if not isinstance(body, Mapping) or not body:
        raise SweepError(f"{where}budget: expected {{epochs: E}} and/or {{minutes: M}}, got {body!r}")
    _strict_keys(body, ("epochs", "minutes"), f"{where}budget: ")
    epochs = _int(body, "epochs", f"{where}budget.", 0, 1) if "epochs" in body else 0
    minutes = _number(body["minutes"], f"{where}budget.minutes") if "minutes" in body else 0.0
    if "minutes" in body and minutes <= 0:
        raise SweepError(f"{where}budget.minutes: expected minutes > 0, got {minutes}")
    return epochs, minutes


def _katib(body: Any, where: str) -> KatibSettings:
    if body is None:
        return KatibSettings()
    if not isinstance(body, Mapping):
        raise SweepError(f"{where}katib: expected a mapping of {', '.join(KATIB_KEYS)}, got {body!r}")
    _strict_keys(body, KATIB_KEYS, f"{where}katib: ")
    env = body.get("env", {})
    if not isinstance(env, Mapping):
        raise SweepError(f"{where}katib.env: expected a mapping of variable names to values, got {env!r}")
    base = KatibSettings()
    return KatibSettings(namespace=str(body.get("namespace", base.namespace)), image=str(body.get("image", "")),
                         cpu=str(body.get("cpu", base.cpu)), memory=str(body.get("memory", base.memory)),
                         gpus=_int(body, "gpus", f"{where}katib.", 0, 0),
                         service_account=str(body.get("service_account", "")),
                         env={str(k): str(v) for k, v in env.items()})


def _find_base(text: Any, source: Path | None, where: str) -> Path:
    if not isinstance(text, str) or not text:
        raise SweepError(f"{where}base_config: expected the path of a training config, got {text!r}")
    path = Path(text)
    tried = [path] if path.is_absolute() else [path, *((source.parent / path, source.parent.parent / path)
                                                       if source else ())]
    for candidate in tried:
        if candidate.is_file():
            return candidate.resolve()
    raise SweepError(f"{where}base_config: no training config at {', '.join(map(str, dict.fromkeys(tried)))}")


def parse_spec(data: Mapping[str, Any], *, source: str | os.PathLike | None = None) -> SweepSpec:
    """A :class:`SweepSpec` from a parsed sweep file; every trial's config is checked to load."""
    src = Path(source) if source else None
    where = f"{src}: " if src else ""
    _strict_keys(data, TOP_KEYS, where)
    for key in ("method", "parameters", "base_config", "budget"):
        if key not in data:
            raise SweepError(f"{where}missing {key!r} (a sweep file needs method, parameters, base_config, budget)")
    method = data["method"]
    if method not in METHODS:
        raise SweepError(f"{where}method: expected one of {', '.join(METHODS)}, got {method!r}")
    params = data["parameters"]
    if not isinstance(params, Mapping) or not params:
        raise SweepError(f"{where}parameters: expected a mapping of dotted config keys to distributions")
    parsed = tuple(parse_param(str(k), v, where) for k, v in params.items())
    base = _find_base(data["base_config"], src, where)
    overrides = data.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise SweepError(f"{where}overrides: expected a list of KEY=VALUE strings, got {overrides!r}")
    epochs, minutes = _budget(data["budget"], where)
    metric_body = data.get("metric", {})
    if not isinstance(metric_body, Mapping):
        raise SweepError(f"{where}metric: expected {{name: val_cer|real_val_cer, goal: minimize}}, got {metric_body!r}")
    _strict_keys(metric_body, ("name", "goal"), f"{where}metric: ")
    goal = metric_body.get("goal", "minimize")
    if goal not in GOALS:
        raise SweepError(f"{where}metric.goal: error rates are minimised; expected minimize, got {goal!r}")
    spec = SweepSpec(
        name=str(data.get("name") or (src.stem if src else "sweep")), method=method, metric="",
        base_config=base, parameters=parsed, trials=_int(data, "trials", where, 0, 1) if "trials" in data else 0,
        budget_epochs=epochs, budget_minutes=minutes, overrides=tuple(overrides),
        pruner=_pruner(data.get("pruner", {"type": "median"}), where), seed=_int(data, "seed", where, 0, 0),
        startup_trials=_int(data, "startup_trials", where, 0, 0),
        parallel_trials=_int(data, "parallel_trials", where, 1, 1),
        max_failed_trials=_int(data, "max_failed_trials", where, 3, 0),
        experiment=str(data.get("experiment", "textrec-sweeps")), katib=_katib(data.get("katib"), where),
        source=str(src or ""))
    budget_keys = {"loop.epochs"} if epochs else set()
    budget_keys |= {"loop.max_minutes"} if minutes else set()
    for p in parsed:
        if p.key in budget_keys:
            raise SweepError(f"{where}parameters.{p.key}: the budget sets it already; search it or budget it, not both")
    if method == "grid":
        try:
            size = spec.grid_size()
        except SweepError as e:
            raise SweepError(f"{where}{e}") from e
        if spec.trials > size:
            raise SweepError(f"{where}trials: {spec.trials} trials but the grid has only {size} points")
        spec = _replace(spec, trials=spec.trials or size)
    elif not spec.trials:
        raise SweepError(f"{where}trials: expected the number of trials (an integer >= 1)")
    return _replace(spec, metric=_check_configs(spec, metric_body.get("name"), where))


def _replace(spec: SweepSpec, **changes: Any) -> SweepSpec:
    import dataclasses

    return dataclasses.replace(spec, **changes)


def _check_configs(spec: SweepSpec, metric: Any, where: str) -> str:
    """Load the base config with each parameter at the ends of its range (and each choice); returns the
    metric to optimise (``real_val_cer`` by default where the config has real validation lines)."""
    try:
        base = spec.train_config({})
    except ConfigError as e:
        raise SweepError(f"{where}base_config/overrides/budget: {e}") from e
    except ValueError as e:
        raise SweepError(f"{where}base_config/overrides/budget: {e}") from e
    for p in spec.parameters:
        for value in p.corners():
            try:
                spec.train_config({p.key: value})
            except (ConfigError, ValueError, KeyError) as e:
                if "unknown config key" in str(e):
                    raise SweepError(f"{where}parameters.{p.key}: not a key of the training config: {e}") from e
                raise SweepError(f"{where}parameters.{p.key}: {value_text(value)!r} is not a valid value of the "
                                 f"training config: {e}") from e
    has_real = bool(base.data.real_val)
    name = metric if metric is not None else ("real_val_cer" if has_real else "val_cer")
    if name not in METRICS:
        raise SweepError(f"{where}metric.name: expected one of {', '.join(METRICS)}, got {name!r}")
    if name == "real_val_cer" and not has_real:
        raise SweepError(f"{where}metric.name: real_val_cer needs a real validation set (data.real_val) in the "
                         f"training config, and {spec.base_config} has none")
    return name


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and check a sweep file (see the module docstring for its keys)."""
    try:
        data = read_yaml(path)
    except ConfigError as e:
        raise SweepError(str(e)) from e
    return parse_spec(data, source=path)
