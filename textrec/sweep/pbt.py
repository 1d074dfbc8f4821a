"""Population-based training (PBT): a population of training runs that copy and perturb each other.

    spec = load_spec("sweeps/pbt.yaml")
    result = run_pbt(spec, Path(".textrec/pbt"), tracking_uri="http://127.0.0.1:5000")

``P`` members train side by side, each in its own process (``python -m textrec.sweep.pbt member``),
from the same base recipe with their own hyperparameters. Every round, each member trains ``interval``
epochs (or steps) on from its exact-resume checkpoint and reports its metric; then the worst
``exploit_fraction`` of the population copies the checkpoint of a member of the best fraction
(exploit) and multiplies each perturbed hyperparameter of that member by one of its ``factors``,
clipped to its ``bounds`` (explore). The next round resumes every checkpoint under its member's
hyperparameters: the trainer takes a changed ``optim`` section into the restored optimiser and schedule.

The run folder::

    OUT/
      pbt.json                 spec, members' hyperparameters per round, metrics, exploit events
      members/m<i>/            each member's run folder (textrec.rundir): checkpoints/{last,best}.pt
      members/m<i>/round-<r>.pt  (keep_checkpoints) what round r+1 resumed from, after exploit
      model.pt, metrics.json   the best member's final model (best weights of its lineage)

MLflow: one parent run, a child run per member (the config as params, per-epoch metrics of its
training history, hyperparameters per round as ``r<r>.<key>`` params and ``hp.<key>`` metrics, each
exploit as a ``textrec.pbt.exploit.r<r>`` tag and the member's whole ``textrec.pbt.lineage``), and the
best member's model (``model/model.pt``) on its run and on the parent.

:func:`katib_experiment` writes the same search as a Katib ``Experiment`` (``algorithmName: pbt``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from textrec import config as configlib
from textrec.data.download import sha256_of
from textrec.io import atomic_open, write_json
from textrec.rundir import RunDir

METRICS = ("val_cer", "val_wer", "real_val_cer", "real_val_wer", "train_loss")
DIRECTIONS = ("minimize", "maximize")
UNITS = ("epochs", "steps")
# What a round may change under a checkpoint: the optimiser's settings (the trainer takes them into
# the restored optimiser) and the stem's training augmentation (the stem is rebuilt from the config).
# Model options would not fit the weights; data settings would render another pool.
PERTURBABLE = ("optim.lr", "optim.weight_decay", "optim.grad_clip", "stem.slant", "stem.rotation",
               "stem.stretch", "stem.thickness", "stem.low_res", "stem.blur", "stem.noise", "stem.contrast")
ONLINE_SYNTH = "data.synth."  # with data.mode=online every line is rendered afresh: its synth recipe may change
SPEC_KEYS = ("name", "base_config", "overrides", "population", "interval", "rounds", "metric", "direction",
             "exploit_fraction", "hyperparameters", "workers", "seed", "experiment", "keep_checkpoints")
HP_KEYS = ("factors", "bounds", "init")
TAG_MEMBER = "textrec.pbt.member"
TAG_LINEAGE = "textrec.pbt.lineage"
TAG_EXPLOIT = "textrec.pbt.exploit"
TAG_BEST_MEMBER = "textrec.pbt.best_member"
TAG_BEST_RUN = "textrec.pbt.best_run_id"
STEP_PARENT, STEP_MEMBER = "pbt", "pbt-member"


class PbtSpecError(ValueError):
    """A PBT spec does not parse; the message names the file and the key at fault."""


@dataclass(frozen=True)
class Hyperparameter:
    """A dotted training-config key that explore multiplies by one of ``factors``, kept in ``bounds``;
    members start at a log-uniform draw from ``init`` (member 0: the base value) when it is given."""

    key: str
    factors: tuple[float, ...] = (0.8, 1.2)
    bounds: tuple[float, float] = (0.0, math.inf)
    init: tuple[float, float] | None = None

    def clip(self, value: float) -> float:
        return min(self.bounds[1], max(self.bounds[0], value))

    def perturb(self, value: float, rng: random.Random) -> float:
        return self.clip(value * rng.choice(self.factors))

    def initial(self, base: float, member: int, rng: random.Random) -> float:
        if self.init is None or member == 0:
            return self.clip(base)
        lo, hi = self.init
        return self.clip(math.exp(rng.uniform(math.log(lo), math.log(hi))) if lo > 0 else rng.uniform(lo, hi))


@dataclass(frozen=True)
class PbtSpec:
    base_config: Path
    hyperparameters: tuple[Hyperparameter, ...]
    name: str = "pbt"
    overrides: tuple[str, ...] = ()
    population: int = 4
    interval: int = 1
    unit: str = "epochs"
    rounds: int = 4
    metric: str = "val_cer"
    direction: str = "minimize"
    exploit_fraction: float = 0.25
    workers: int = 0  # members training at once; 0: min(population, cores)
    seed: int = 0
    experiment: str = "textrec-pbt"
    keep_checkpoints: bool = False

    @property
    def n_exploit(self) -> int:
        """Members replaced each round (and members they may copy): at least one in a population of two."""
        return max(1, int(self.population * self.exploit_fraction)) if self.population > 1 else 0

    def better(self, a: float, b: float) -> bool:
        return a < b if self.direction == "minimize" else a > b

    def ranked(self, members: Sequence[Member]) -> list[Member]:
        """The members with a metric, best first (ties: the lower index)."""
        sign = 1.0 if self.direction == "minimize" else -1.0
        return sorted((m for m in members if m.metric is not None),
                      key=lambda m: (sign * (m.metric or 0.0), m.index))


def _fail(where: str, message: str) -> PbtSpecError:
    return PbtSpecError(f"{where}: {message}")


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _fail(where, f"{key} must be a finite number, got {value!r}")
    return float(value)


def _integer(value: Any, where: str, key: str, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise _fail(where, f"{key} must be an integer >= {least}, got {value!r}")
    return value


def _pair(value: Any, where: str, key: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise _fail(where, f"{key} must be a list [low, high], got {value!r}")
    lo, hi = (_number(v, where, key) for v in value)
    if not lo < hi:
        raise _fail(where, f"{key} must have low < high, got {list(value)}")
    return lo, hi


def _interval(value: Any, where: str) -> tuple[int, str]:
    if isinstance(value, Mapping):
        if len(value) != 1 or next(iter(value)) not in UNITS:
            raise _fail(where, f"interval must be an integer (epochs) or one of {{epochs: N}}, {{steps: N}}, "
                               f"got {dict(value)!r}")
        unit, n = next(iter(value.items()))
        return _integer(n, where, f"interval.{unit}", 1), str(unit)
    return _integer(value, where, "interval", 1), "epochs"


def _hyperparameter(key: Any, value: Any, where: str, mode: str) -> Hyperparameter:
    if not isinstance(key, str) or not (key in PERTURBABLE or (mode == "online" and key.startswith(ONLINE_SYNTH))):
        raise _fail(where, f"hyperparameters: {key!r} cannot change under a checkpoint; perturbable keys: "
                           f"{', '.join(PERTURBABLE)}" + (", data.synth.* (data.mode=online)" if mode == "online"
                                                          else "; data.synth.* only with data.mode=online"))
    if not isinstance(value, Mapping):
        raise _fail(where, f"hyperparameters.{key} must be a mapping with {', '.join(HP_KEYS)}, got {value!r}")
    unknown = sorted(set(value) - set(HP_KEYS))
    if unknown:
        raise _fail(where, f"hyperparameters.{key}: unknown keys {unknown}; valid: {', '.join(HP_KEYS)}")
    if "bounds" not in value:
        raise _fail(where, f"hyperparameters.{key}.bounds is required ([low, high])")
    factors = value.get("factors", [0.8, 1.2])
    if not isinstance(factors, list | tuple) or not factors:
        raise _fail(where, f"hyperparameters.{key}.factors must be a non-empty list, got {factors!r}")
    fs = tuple(_number(f, where, f"hyperparameters.{key}.factors") for f in factors)
    if any(f <= 0 for f in fs):
        raise _fail(where, f"hyperparameters.{key}.factors must be > 0, got {list(fs)}")
    bounds = _pair(value["bounds"], where, f"hyperparameters.{key}.bounds")
    init = _pair(value["init"], where, f"hyperparameters.{key}.init") if "init" in value else None
    if init is not None and not (bounds[0] <= init[0] and init[1] <= bounds[1]):
        raise _fail(where, f"hyperparameters.{key}.init {list(init)} must lie inside bounds {list(bounds)}")
    return Hyperparameter(key, fs, bounds, init)


def load_spec(source: str | os.PathLike, *, population: int | None = None) -> PbtSpec:
    """Parse and check a PBT spec (YAML); relative ``base_config`` paths are taken from the repository
    root first, then from the spec's folder. ``population`` overrides the file's."""
    path = Path(source)
    where = str(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PbtSpecError(f"{where}: no such PBT spec") from None
    except yaml.YAMLError as e:
        raise _fail(where, f"not valid YAML ({e})") from e
    if not isinstance(data, Mapping):
        raise _fail(where, f"expected a mapping of settings, got {type(data).__name__}")
    return spec_from_dict(data, where=where, root=path.parent, population=population)


def _base_path(value: Any, where: str, root: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise _fail(where, f"base_config must be the path of a training config, got {value!r}")
    for candidate in (Path(value), Path(__file__).resolve().parents[2] / value, root / value):
        if candidate.is_file():
            return candidate
    raise _fail(where, f"base_config {value!r}: no such training config")


def spec_from_dict(data: Mapping[str, Any], *, where: str = "PBT spec", root: Path = Path("."),
                   population: int | None = None) -> PbtSpec:
    unknown = sorted(set(data) - set(SPEC_KEYS))
    if unknown:
        raise _fail(where, f"unknown keys {unknown}; valid keys: {', '.join(SPEC_KEYS)}")
    for key in ("base_config", "hyperparameters", "rounds"):
        if key not in data:
            raise _fail(where, f"{key} is required")
    base = _base_path(data["base_config"], where, root)
    overrides = data.get("overrides", [])
    if not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides):
        raise _fail(where, f"overrides must be a list of 'section.key=value' strings, got {overrides!r}")
    cfg = _load_training(base, overrides, where)
    pop = _integer(population if population is not None else data.get("population", 4), where, "population", 2)
    interval, unit = _interval(data.get("interval", 1), where)
    metric = data.get("metric", "val_cer")
    if metric not in METRICS:
        raise _fail(where, f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if metric.startswith("real_val") and not cfg.data.real_val:
        raise _fail(where, f"metric {metric} needs a real validation set: data.real_val is empty in {base}")
    direction = data.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise _fail(where, f"direction must be one of {', '.join(DIRECTIONS)}, got {direction!r}")
    fraction = _number(data.get("exploit_fraction", 0.25), where, "exploit_fraction")
    if not 0 < fraction <= 0.5:
        raise _fail(where, f"exploit_fraction must be in (0, 0.5] (losers and winners must not overlap), "
                           f"got {fraction}")
    hps = data["hyperparameters"]
    if not isinstance(hps, Mapping) or not hps:
        raise _fail(where, "hyperparameters must be a non-empty mapping of dotted config keys")
    hyper = tuple(_hyperparameter(k, v, where, cfg.data.mode) for k, v in hps.items())
    for hp in hyper:
        _number(_get(configlib.to_dict(cfg), hp.key), where, f"the base config's {hp.key}")
    name = data.get("name", path_stem(where))
    if not isinstance(name, str) or not name or any(c in name for c in "'\"`\\/ "):
        raise _fail(where, f"name must be a short word without quotes, slashes or spaces, got {name!r}")
    experiment = data.get("experiment", "textrec-pbt")
    if not isinstance(experiment, str) or not experiment:
        raise _fail(where, f"experiment must be an MLflow experiment name, got {experiment!r}")
    keep = data.get("keep_checkpoints", False)
    if not isinstance(keep, bool):
        raise _fail(where, f"keep_checkpoints must be true or false, got {keep!r}")
    return PbtSpec(base_config=base, hyperparameters=hyper, name=name, overrides=tuple(overrides), population=pop,
                   interval=interval, unit=unit, rounds=_integer(data["rounds"], where, "rounds", 1),
                   metric=metric, direction=direction, exploit_fraction=fraction,
                   workers=_integer(data.get("workers", 0), where, "workers", 0),
                   seed=_integer(data.get("seed", 0), where, "seed", 0), experiment=experiment,
                   keep_checkpoints=keep)


def path_stem(where: str) -> str:
    stem = Path(where).stem
    return stem if stem and " " not in stem else "pbt"


def _load_training(base: Path, overrides: Sequence[str], where: str):
    from textrec.training.config import load_config

    try:
        return load_config(base, list(overrides))
    except (configlib.ConfigError, KeyError, ValueError) as e:
        raise _fail(where, f"the training config does not load: {e}") from e


# --- training configs of the members ------------------------------------------------------------------

def _get(data: Mapping[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if node is None and key.startswith(ONLINE_SYNTH):  # a SynthConfig default not set in the config
        from textrec.data.synth import SynthConfig

        node = configlib.to_dict(SynthConfig()).get(key[len(ONLINE_SYNTH):])
    return node


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def base_training(spec: PbtSpec, extra: Sequence[str] = ()) -> dict[str, Any]:
    """The base recipe as a dict, set up for a population: the schedule spans every round (epochs
    mode), no wall-clock budget or early stopping (each would stop a member across rounds), one
    compute thread per member unless the recipe says otherwise, no progress bars."""
    cfg = _load_training(spec.base_config, [*spec.overrides, *extra], str(spec.base_config))
    data = configlib.to_dict(cfg)
    if spec.unit == "epochs":
        data["loop"]["epochs"] = spec.rounds * spec.interval
    data["loop"].update(max_minutes=0.0, patience=0, progress=False, threads=data["loop"]["threads"] or 1)
    return data


def member_config(base: Mapping[str, Any], hparams: Mapping[str, float], member: int) -> dict[str, Any]:
    """A member's training config: the base with its hyperparameters and its own loop seed."""
    from textrec.training.config import TrainConfig

    data = json.loads(json.dumps(base))
    for key, value in hparams.items():
        _set(data, key, value)
    data["loop"]["seed"] = int(base["loop"]["seed"]) + member
    configlib.from_dict(TrainConfig, data)  # a perturbed value the config refuses fails here, named
    return data


# --- the population -------------------------------------------------------------------------------------

@dataclass
class Member:
    index: int
    out: Path
    hparams: dict[str, float]
    run_id: str = ""
    metric: float | None = None
    epoch: float = 0.0
    step: int = 0

    @property
    def name(self) -> str:
        return f"m{self.index}"

    @property
    def run(self) -> RunDir:
        return RunDir(self.out)


@dataclass
class PbtResult:
    out: Path
    best: int  # the best member's index
    metric: float
    members: list[dict[str, Any]]
    events: list[dict[str, Any]]
    parent_run_id: str = ""
    final: dict[str, Any] = field(default_factory=dict)  # the best member's final metrics


def _copy_atomic(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, atomic_open(dest, "wb") as fout:
        shutil.copyfileobj(fin, fout)


def exploit_and_explore(spec: PbtSpec, members: list[Member], round_: int, rng: random.Random) -> list[dict[str, Any]]:
    """The worst ``n_exploit`` members take a checkpoint (last and best) of one of the best ``n_exploit``
    and that member's hyperparameters, perturbed. Returns one event per copy."""
    ranked = spec.ranked(members)
    n = spec.n_exploit
    winners, losers = ranked[:n], ranked[len(ranked) - n:]
    events = []
    for loser in losers:
        winner = rng.choice(winners)
        assert winner.metric is not None and loser.metric is not None
        if not spec.better(winner.metric, loser.metric):
            continue  # a tie: nothing better to copy
        sha = sha256_of(winner.run.last)
        _copy_atomic(winner.run.last, loser.run.last)
        if winner.run.best.is_file():
            _copy_atomic(winner.run.best, loser.run.best)
        old = dict(loser.hparams)
        loser.hparams = {hp.key: hp.perturb(winner.hparams[hp.key], rng) for hp in spec.hyperparameters}
        events.append({"round": round_, "member": loser.index, "from_member": winner.index,
                       "from_run_id": winner.run_id, "checkpoint_sha256": sha, "epoch": winner.epoch,
                       "step": winner.step, "metric": loser.metric, "from_metric": winner.metric,
                       "hparams_before": old, "from_hparams": dict(winner.hparams), "hparams": dict(loser.hparams)})
        loser.metric, loser.epoch, loser.step = winner.metric, winner.epoch, winner.step
    return events


def ancestry(events: Sequence[Mapping[str, Any]], member: int, rounds: int) -> list[dict[str, int]]:
    """Whose training a member's final weights went through, newest first: ``{"member", "first_round",
    "last_round"}`` segments. An exploit at the end of round r into member m means m's weights up to
    round r are those of the member it copied."""
    out: list[dict[str, int]] = []
    last = rounds
    copies = sorted(events, key=lambda e: -int(e["round"]))
    while True:
        earlier = [e for e in copies if int(e["member"]) == member and int(e["round"]) < last]
        if not earlier:
            out.append({"member": member, "first_round": 1, "last_round": last})
            return out
        e = earlier[0]
        out.append({"member": member, "first_round": int(e["round"]) + 1, "last_round": last})
        member, last = int(e["from_member"]), int(e["round"])


# --- one member's process ---------------------------------------------------------------------------------

def _stop_callback(unit: str, target: int):
    from textrec.training.callbacks import Callback

    class StopAfter(Callback):
        """Ask the loop to stop once ``target`` epochs (or steps) are trained; the loop then validates,
        saves ``last.pt`` and returns, keeping the position for the next round."""

        def _check(self, trainer: Any) -> None:
            done = trainer.epoch if unit == "epochs" else trainer.step
            if done >= target:
                trainer.request_stop(f"PBT round done ({target} {unit})")

        def on_train_start(self, trainer: Any) -> None:
            self._check(trainer)

        def on_epoch_end(self, trainer: Any, epoch: int, metrics: dict[str, Any]) -> None:
            self._check(trainer)

        def on_step_end(self, trainer: Any, step: int, loss: float, lines: int) -> None:
            if unit == "steps":
                self._check(trainer)

    return StopAfter()


def train_member(cfg_data: Mapping[str, Any], out: str | os.PathLike, *, train: int, unit: str = "epochs",
                 metric: str = "val_cer", finish: bool = False) -> dict[str, Any]:
    """Resume a member from ``OUT/checkpoints/last.pt`` (if any) and train ``train`` more epochs (or
    steps) under ``cfg_data``; with ``finish``, write its final model instead. Returns the position, the
    last value of ``metric``, the optimiser's LR and the history entries of this round.

    A member does not talk to MLflow: the controller logs what it returns (one process importing
    mlflow instead of one per member and round)."""
    from textrec.io import write_yaml
    from textrec.training import distributed
    from textrec.training.config import TrainConfig
    from textrec.training.loop import Trainer

    cfg = configlib.from_dict(TrainConfig, cfg_data)
    trainer = Trainer(cfg, out, resume="auto")
    try:
        write_yaml(trainer.run.config, configlib.to_dict(cfg))
        if finish:
            final = trainer.finish()
            return {"epoch": trainer.epochs_done(), "step": trainer.step, "metric": final.get(metric), "final": final}
        start, seen = (trainer.epoch if unit == "epochs" else trainer.step), len(trainer.history)
        trainer.callbacks.append(_stop_callback(unit, start + train))
        trainer.fit()
        last = trainer.history[-1] if trainer.history else {}
        return {"epoch": trainer.epochs_done(), "step": trainer.step, "metric": last.get(metric),
                "lr": trainer.optimizer.param_groups[0]["lr"], "history": trainer.history[seen:]}
    finally:
        trainer.close()
        distributed.cleanup()


def member_command(cfg_data: Mapping[str, Any], out: Path, *, train: int, unit: str, metric: str,
                   finish: bool = False, result: Path | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "textrec.sweep.pbt", "member", "--config-yaml",
           yaml.safe_dump(dict(cfg_data), sort_keys=False), "--out", str(out), "--train", str(train),
           "--unit", unit, "--metric", metric]
    if result is not None:
        cmd += ["--result", str(result)]
    return cmd + (["--finish"] if finish else [])


def _run_all(jobs: list[tuple[Member, list[str], Path]], workers: int, log: Callable[[str], None]) -> None:
    """Run the members' processes, ``workers`` at a time; a failure names the member and its log."""
    pending = list(jobs)
    running: list[tuple[Member, subprocess.Popen, Path]] = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    failed: list[str] = []
    while pending or running:
        while pending and len(running) < workers:
            member, cmd, logfile = pending.pop(0)
            logfile.parent.mkdir(parents=True, exist_ok=True)
            with open(logfile, "w") as f:
                running.append((member, subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env), logfile))
        time.sleep(0.2)
        for item in list(running):
            member, proc, logfile = item
            if proc.poll() is None:
                continue
            running.remove(item)
            if proc.returncode != 0:
                tail = logfile.read_text(errors="replace")[-2000:]
                failed.append(f"member {member.name} exited {proc.returncode} (log {logfile}):\n{tail}")
    if failed:
        raise RuntimeError("PBT: " + "\n".join(failed))


# --- the controller ------------------------------------------------------------------------------------------

class _Tracker:
    """The PBT's MLflow runs; every call is a no-op without a tracking URI."""

    def __init__(self, spec: PbtSpec, tracking_uri: str) -> None:
        self.spec, self.uri, self.parent = spec, tracking_uri, ""
        self.client: Any = None
        if tracking_uri:
            from textrec.tracking import ensure_experiment, mlflow_client

            self.client = mlflow_client(tracking_uri)
            self.exp = ensure_experiment(spec.experiment, tracking_uri=tracking_uri)

    def start(self, members: list[Member], configs: list[dict[str, Any]]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Param

        from textrec.tracking import TAG_GIT, TAG_PARENT, TAG_STEP, git_commit
        from textrec.tracking.callback import flatten

        s = self.spec
        self.parent = self.client.create_run(self.exp, run_name=f"pbt-{s.name}", tags={
            TAG_STEP: STEP_PARENT, TAG_GIT: git_commit(), "textrec.pbt.population": str(s.population)}).info.run_id
        params = {"base_config": str(s.base_config), "population": s.population, "interval": s.interval,
                  "unit": s.unit, "rounds": s.rounds, "metric": s.metric, "direction": s.direction,
                  "exploit_fraction": s.exploit_fraction, "overrides": " ".join(s.overrides), "seed": s.seed}
        for hp in s.hyperparameters:
            params[f"hp.{hp.key}"] = json.dumps({"factors": hp.factors, "bounds": hp.bounds, "init": hp.init})
        self.client.log_batch(self.parent, params=[Param(k, str(v)[:6000]) for k, v in params.items()])
        for m in members:
            m.run_id = self.client.create_run(self.exp, run_name=f"{s.name}-{m.name}", tags={
                TAG_PARENT: self.parent, TAG_STEP: STEP_MEMBER, TAG_MEMBER: str(m.index), TAG_GIT: git_commit(),
            }).info.run_id
            flat = [Param(k, str(v)[:6000]) for k, v in flatten(configs[m.index]).items()]
            for i in range(0, len(flat), 100):  # log_batch takes at most 100 params at once
                self.client.log_batch(m.run_id, params=flat[i:i + 100])

    def history(self, member: Member, entries: list[dict[str, Any]]) -> None:
        """A round's training metrics (each number of each history entry) at its epoch (steps mode: its
        optimiser step), as the training callback logs a run's."""
        if self.client is None or not entries:
            return
        from mlflow.entities import Metric

        from textrec.metrics import numeric

        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, math.ceil(h["epoch"]) if self.spec.unit == "epochs" else int(h["step"]))
                 for h in entries for k, v in numeric(h).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(member.run_id, metrics=batch[i:i + 1000])

    def final_metrics(self, best: Member, final: Mapping[str, Any]) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        from textrec.metrics import numeric

        now = int(time.time() * 1000)
        metrics = [Metric(f"final_{k}", v, now, 0) for k, v in numeric(dict(final)).items()]
        self.client.log_batch(best.run_id, metrics=metrics)
        self.client.log_batch(self.parent, metrics=metrics)

    def round_params(self, members: list[Member], round_: int, first_step: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        for m in members:
            self.client.log_batch(m.run_id, params=[Param(f"r{round_}.{k}", repr(v)) for k, v in m.hparams.items()],
                                  metrics=[Metric(f"hp.{k}", v, now, first_step) for k, v in m.hparams.items()])

    def round_metrics(self, members: list[Member], round_: int) -> None:
        if self.client is None:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for m in members:
            if m.metric is not None:
                self.client.log_batch(m.run_id, metrics=[Metric(f"pbt_{self.spec.metric}", m.metric, now, round_)])
        best = [m.metric for m in members if m.metric is not None]
        if best:
            value = min(best) if self.spec.direction == "minimize" else max(best)
            self.client.log_metric(self.parent, f"best_{self.spec.metric}", value, step=round_)

    def exploits(self, members: list[Member], events: list[dict[str, Any]], all_events: list[dict[str, Any]]) -> None:
        if self.client is None:
            return
        for e in events:
            run_id = members[e["member"]].run_id
            r = e["round"]
            record = {k: e[k] for k in ("round", "from_member", "from_run_id", "checkpoint_sha256", "epoch",
                                        "step", "metric", "from_metric")}
            self.client.set_tag(run_id, f"{TAG_EXPLOIT}.r{r}", json.dumps(record))
            self.client.log_param(run_id, f"r{r + 1}.exploit_from", f"m{e['from_member']}@r{r}")
            mine = [{"round": x["round"], "from_member": x["from_member"], "from_run_id": x["from_run_id"]}
                    for x in all_events if x["member"] == e["member"]]
            self.client.set_tag(run_id, TAG_LINEAGE, json.dumps(mine))

    def finish(self, members: list[Member], best: Member, out: Path, state: Path, failed: bool = False) -> None:
        if self.client is None:
            return
        status = "FAILED" if failed else "FINISHED"
        if not failed:
            self.client.set_tag(self.parent, TAG_BEST_MEMBER, str(best.index))
            self.client.set_tag(self.parent, TAG_BEST_RUN, best.run_id)
            self.client.set_tag(best.run_id, "textrec.pbt.best", "true")
            for rid in (best.run_id, self.parent):
                for name in ("model.pt", "metrics.json"):
                    if (out / name).is_file():
                        self.client.log_artifact(rid, str(out / name), artifact_path="model")
            self.client.log_artifact(self.parent, str(state))
        for m in members:
            self.client.set_terminated(m.run_id, status=status)
        self.client.set_terminated(self.parent, status=status)


def run_pbt(spec: PbtSpec, out: str | os.PathLike, *, tracking_uri: str = "", overrides: Sequence[str] = (),
            log: Callable[[str], None] = print) -> PbtResult:
    """Train the population in ``out`` for ``spec.rounds`` rounds; returns the best member and the history
    of exploits. ``tracking_uri`` '' logs nothing to MLflow. ``overrides`` apply to the base config after
    the spec's own (``data.cache_dir=...``, say)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = base_training(spec, overrides)
    rng = random.Random(spec.seed)
    members = [Member(i, out / "members" / f"m{i}",
                      {hp.key: hp.initial(float(_get(base, hp.key)), i, rng) for hp in spec.hyperparameters})
               for i in range(spec.population)]
    _prepare_data(base, out, log)
    workers = spec.workers or min(spec.population, os.cpu_count() or 1)
    tracker = _Tracker(spec, tracking_uri)
    tracker.start(members, [member_config(base, m.hparams, m.index) for m in members])
    state_path = out / "pbt.json"
    state: dict[str, Any] = {"spec": _spec_record(spec), "parent_run_id": tracker.parent, "rounds": [], "events": []}
    best = members[0]
    try:
        for r in range(1, spec.rounds + 1):
            first = members[0].step + 1 if spec.unit == "steps" else int(members[0].epoch) + 1
            tracker.round_params(members, r, first)
            jobs = []
            for m in members:
                result = m.out / f"round-{r}.json"
                cmd = member_command(member_config(base, m.hparams, m.index), m.out, train=spec.interval,
                                     unit=spec.unit, metric=spec.metric, result=result)
                jobs.append((m, cmd, m.out / f"round-{r}.log"))
            log(f"PBT round {r}/{spec.rounds}: {spec.population} members x {spec.interval} {spec.unit}, "
                f"{workers} at a time")
            _run_all(jobs, workers, log)
            for m in members:
                done = json.loads((m.out / f"round-{r}.json").read_text())
                m.metric, m.epoch, m.step = done["metric"], done["epoch"], done["step"]
                tracker.history(m, done["history"])
            tracker.round_metrics(members, r)
            record = {"round": r, "members": [{"member": m.index, "hparams": dict(m.hparams), "metric": m.metric,
                                               "epoch": m.epoch, "step": m.step, "run_id": m.run_id} for m in members]}
            log(f"  {spec.metric}: " + ", ".join(f"{m.name} {m.metric:.4f}" if m.metric is not None else f"{m.name} -"
                                                 for m in members))
            if r < spec.rounds:
                events = exploit_and_explore(spec, members, r, rng)
                state["events"] += events
                tracker.exploits(members, events, state["events"])
                for e in events:
                    log(f"  exploit: m{e['member']} <- m{e['from_member']} ({e['from_metric']:.4f} vs "
                        f"{e['metric']:.4f}); explore: {e['hparams']}")
            if spec.keep_checkpoints:
                for m in members:
                    _copy_atomic(m.run.last, m.out / f"round-{r}.pt")
            state["rounds"].append(record)
            write_json(state_path, state)
        best = spec.ranked(members)[0]
        final_path = best.out / "final.json"
        log(f"PBT: best member {best.name} ({spec.metric} {best.metric:.4f}); writing its model")
        _run_all([(best, member_command(member_config(base, best.hparams, best.index), best.out, train=0,
                                        unit=spec.unit, metric=spec.metric, finish=True, result=final_path),
                   best.out / "final.log")], 1, log)
        final = json.loads(final_path.read_text()).get("final", {})
        tracker.final_metrics(best, final)
        for path in best.run.outputs():
            shutil.copyfile(path, out / path.name)
        state.update(best_member=best.index, best_metric=best.metric, best_run_id=best.run_id,
                     ancestry=ancestry(state["events"], best.index, spec.rounds), final=final)
        write_json(state_path, state)
    except BaseException:
        write_json(state_path, state)
        tracker.finish(members, best, out, state_path, failed=True)
        raise
    tracker.finish(members, best, out, state_path)
    assert best.metric is not None
    return PbtResult(out, best.index, best.metric, state["rounds"][-1]["members"], state["events"],
                     tracker.parent, final)


def _spec_record(spec: PbtSpec) -> dict[str, Any]:
    data = configlib.to_dict(spec)
    data["base_config"] = str(spec.base_config)
    data["hyperparameters"] = [configlib.to_dict(hp) for hp in spec.hyperparameters]
    return data


def _prepare_data(base: Mapping[str, Any], out: Path, log: Callable[[str], None]) -> None:
    """Render the population's synthetic pool (or fetch its stores) once, before the members start:
    they all train on the same data and would otherwise each render it."""
    from textrec.training import distributed
    from textrec.training.config import TrainConfig
    from textrec.training.data import build_data, charset_and_stem

    cfg = configlib.from_dict(TrainConfig, base)
    charset, stem = charset_and_stem(cfg)  # the trainer's own choice for this config
    build_data(cfg, out, charset, stem, distributed.setup("cpu"), log=log)


# --- Katib ------------------------------------------------------------------------------------------------

KATIB_TRIAL_DIR = "/var/log/katib/checkpoints"
KATIB_MIN_POPULATION = 5  # Katib's PBT suggestion refuses fewer


def katib_parameter(key: str) -> str:
    """A config key as a Katib parameter name (``optim.lr`` -> ``optim_lr``)."""
    return key.replace(".", "_")


def katib_experiment(spec: PbtSpec, *, image: str, namespace: str = "kubeflow", name: str = "",
                     overrides: Sequence[str] = (), trial_dir: str = KATIB_TRIAL_DIR) -> dict[str, Any]:
    """The spec as a Katib ``Experiment`` with ``algorithmName: pbt``.

    Katib's PBT runs each member's round as one trial (a generation); its suggestion service copies the
    parent trial's folder into the new trial's ``suggestion_trial_dir`` before exploiting, so each trial
    resumes that folder's ``checkpoints/last.pt`` for ``interval`` more epochs and prints ``metric=value``
    for Katib's stdout metrics collector. Katib perturbs by 0.8 or 1.2 (its fixed factors) inside each
    parameter's feasible space, the spec's bounds.
    """
    if spec.population < KATIB_MIN_POPULATION:
        raise ValueError(f"Katib's PBT needs n_population >= {KATIB_MIN_POPULATION}; the spec has "
                         f"{spec.population} (pass a larger --population)")
    base = base_training(spec, overrides)
    exp_name = name or f"textrec-pbt-{spec.name}".replace("_", "-").lower()
    params, trial_params, sets = [], [], []
    for hp in spec.hyperparameters:
        pname = katib_parameter(hp.key)
        lo, hi = hp.bounds  # finite: a spec's bounds are required and checked
        params.append({"name": pname, "parameterType": "double",
                       "feasibleSpace": {"min": repr(lo), "max": repr(hi), "step": repr((hi - lo) / 100)}})
        trial_params.append({"name": pname, "description": f"training config {hp.key}", "reference": pname})
        sets += ["--set", f"{hp.key}=${{trialParameters.{pname}}}"]
    command = ["python", "-m", "textrec.sweep.pbt", "member", "--config-yaml",
               yaml.safe_dump(base, sort_keys=False), "--out", trial_dir, "--train", str(spec.interval),
               "--unit", spec.unit, "--metric", spec.metric, *sets]
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": exp_name, "namespace": namespace},
        "spec": {
            "maxTrialCount": spec.population * spec.rounds,
            "parallelTrialCount": spec.workers or spec.population,
            "maxFailedTrialCount": spec.population,
            "resumePolicy": "FromVolume",
            "objective": {"type": spec.direction, "objectiveMetricName": spec.metric},
            "algorithm": {"algorithmName": "pbt", "algorithmSettings": [
                {"name": "suggestion_trial_dir", "value": trial_dir},
                {"name": "n_population", "value": str(spec.population)},
                {"name": "truncation_threshold", "value": str(spec.exploit_fraction)},
            ]},
            "parameters": params,
            "trialTemplate": {
                "primaryContainerName": "training-container",
                "trialParameters": trial_params,
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "containers": [{"name": "training-container", "image": image, "command": command}],
                    "restartPolicy": "Never",
                }}}},
            },
        },
    }


# --- command line ---------------------------------------------------------------------------------------------

def _cli_run(a: argparse.Namespace) -> None:
    spec = load_spec(a.config, population=a.population)
    if a.katib:
        manifest = katib_experiment(spec, image=a.image, namespace=a.namespace, overrides=a.overrides)
        text = yaml.safe_dump(manifest, sort_keys=False)
        if a.katib == "-":
            print(text, end="")
        else:
            with atomic_open(a.katib, "w") as f:
                f.write(text)
            print(f"wrote {a.katib}")
        return
    uri = a.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    result = run_pbt(spec, a.out or Path(".textrec/pbt") / spec.name, tracking_uri=uri, overrides=a.overrides,
                     log=lambda s: print(s, file=sys.stderr))
    print(json.dumps({"best_member": result.best, spec.metric: result.metric, "out": str(result.out),
                      "parent_run_id": result.parent_run_id, "exploits": len(result.events)}, indent=2))


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``textrec pbt``: population-based training of a recipe (or its Katib Experiment)."""
    p = subparsers.add_parser("pbt", help="population-based training: --config sweeps/pbt.yaml [--population P]")
    p.add_argument("--config", type=Path, required=True, help="PBT spec (sweeps/pbt.yaml, sweeps/pbt-smoke.yaml)")
    p.add_argument("--population", type=int, default=None, help="members (default: the spec's)")
    p.add_argument("--out", type=Path, default=None, help="run folder (default .textrec/pbt/<name>)")
    p.add_argument("--mlflow-uri", default="", help="MLflow tracking URI (default MLFLOW_TRACKING_URI; none: untracked)")
    p.add_argument("--katib", default="", metavar="FILE",
                   help="write the Katib Experiment (algorithmName: pbt) to FILE ('-': stdout) instead of training")
    p.add_argument("--image", default="textrec-component:latest", help="with --katib: the trial container image")
    p.add_argument("--namespace", default="kubeflow", help="with --katib: the Experiment's namespace")
    p.set_defaults(func=_cli_run, accepts_overrides=True)
    return p


def _member_main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m textrec.sweep.pbt member",
                                description="Train one PBT member for one round (resuming its checkpoint).")
    p.add_argument("--config-yaml", required=True, help="the member's full training config, as YAML text")
    p.add_argument("--out", required=True, help="the member's run folder")
    p.add_argument("--train", type=int, required=True, help="epochs (or steps) to train this round")
    p.add_argument("--unit", choices=UNITS, default="epochs")
    p.add_argument("--metric", default="val_cer")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="set a config key (a Katib trial's hyperparameters)")
    p.add_argument("--result", default="", help="write the round's position and metric here (JSON)")
    p.add_argument("--finish", action="store_true", help="write the member's final model instead of training")
    a = p.parse_args(argv)
    data = yaml.safe_load(a.config_yaml) or {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set {item!r}: expected KEY=VALUE")
        _set(data, key, yaml.safe_load(value))
    done = train_member(data, a.out, train=a.train, unit=a.unit, metric=a.metric, finish=a.finish)
    if a.result:
        write_json(a.result, done)
    if done.get("metric") is not None:
        print(f"{a.metric}={done['metric']}")  # Katib's stdout metrics collector reads name=value lines
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["member"]:
        return _member_main(argv[1:])
    p = argparse.ArgumentParser(prog="python -m textrec.sweep.pbt")
    sub = p.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args, extra = p.parse_known_args(argv)
    args.overrides = extra
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
