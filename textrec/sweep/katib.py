"""A sweep file as a Katib ``Experiment`` (kubeflow.org/v1beta1): the same space, metric, budget and
trial count, each trial a batch/v1 Job running :mod:`textrec.sweep.trial` in the component image.

    manifest = experiment(load_spec("sweeps/cpu.yaml"))

- ``objective``: minimize ``objectiveMetricName`` (val_cer or real_val_cer), the best (``min``) value a
  trial printed; ``algorithm``: bayes -> bayesianoptimization, random -> random, grid -> grid.
- ``parameters``: log_uniform -> double with ``distribution: logUniform``, uniform -> double, int -> int,
  choice -> categorical (Katib hands every value over as text).
- The median pruner becomes Katib's ``medianstop`` early stopping; other pruners have no Katib
  counterpart and are left out (trials then run their whole budget).
- ``metricsCollectorSpec``: the StdOut collector with its default ``name=value`` pattern, which
  :func:`textrec.sweep.trial.metric_line` writes.

Only the manifest is made here (textrec knows nothing of Kubernetes); ``cluster.katib`` submits it.
"""

from __future__ import annotations

import re
from typing import Any

from textrec import component_image
from textrec.config import to_dict
from textrec.sweep.spec import Param, SweepSpec, value_text
from textrec.sweep.trial import CONFIG_ENV

API_VERSION = "kubeflow.org/v1beta1"
GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
ALGORITHMS = {"bayes": "bayesianoptimization", "random": "random", "grid": "grid"}
CONTAINER = "training-container"
TRIAL_OUT = "/tmp/textrec-trial"
# Katib's StdOut collector, default pattern (pkg/metricscollector/v1beta1/common: DefaultFilter).
STDOUT_PATTERN = r"([\w|-]+)\s*=\s*((-?\d+)(\.\d+)?)"


def default_image() -> str:
    """The trial's image: the component image (``TEXTREC_IMAGE``, else the release's)."""
    return component_image()


def experiment_name(spec: SweepSpec) -> str:
    """A DNS-1123 name: ``textrec-<sweep name>``.

    >>> experiment_name(type("S", (), {"name": "CPU_sweep.v2"})())
    'textrec-cpu-sweep-v2'
    """
    slug = re.sub(r"[^a-z0-9]+", "-", spec.name.lower()).strip("-") or "sweep"
    return f"textrec-{slug}"[:63].rstrip("-")


def parameter_name(key: str) -> str:
    """The Katib parameter of a config key: ``optim.lr`` -> ``optim-lr``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", key).strip("-")


def trial_parameter_name(key: str) -> str:
    """The name the trial template refers to: ``optim.lr`` -> ``optimLr``, ``data.batch_size`` -> ``dataBatchSize``."""
    words = [w for w in re.split(r"[^A-Za-z0-9]+", key) if w]
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def decimal_text(x: float) -> str:
    """A number in plain decimals, never ``1e-06``: a YAML reader may take that for a number, and the
    feasible space holds strings.

    >>> decimal_text(1e-06), decimal_text(0.01), decimal_text(3.0)
    ('0.000001', '0.01', '3')
    """
    from decimal import Decimal

    text = format(Decimal(repr(float(x))), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def parameter(p: Param) -> dict[str, Any]:
    if p.kind == "choice":
        return {"name": parameter_name(p.key), "parameterType": "categorical",
                "feasibleSpace": {"list": [value_text(c) for c in p.choices]}}
    if p.kind == "int":
        return {"name": parameter_name(p.key), "parameterType": "int",
                "feasibleSpace": {"min": str(int(p.low)), "max": str(int(p.high))}}
    space = {"min": decimal_text(p.low), "max": decimal_text(p.high),
             "distribution": "logUniform" if p.log else "uniform"}
    return {"name": parameter_name(p.key), "parameterType": "double", "feasibleSpace": space}


def early_stopping(spec: SweepSpec) -> dict[str, Any] | None:
    if spec.pruner.type != "median":
        return None
    o = spec.pruner.options
    # Optuna counts warmup steps from 0; Katib's start_step is the number of reports before the rule applies.
    settings = {"min_trials_required": o.get("n_startup_trials", 5), "start_step": o.get("n_warmup_steps", 0) + 1}
    return {"algorithmName": "medianstop",
            "algorithmSettings": [{"name": k, "value": str(v)} for k, v in settings.items()]}


def trial_command(spec: SweepSpec) -> list[str]:
    """The trial container's command: no argument has a space (Katib's collector wraps the command in a
    shell), and the config travels in the environment instead."""
    return ["python3", "-m", "textrec.sweep.trial", f"--metric={spec.metric}", f"--out={TRIAL_OUT}",
            *(f"{p.key}=${{trialParameters.{trial_parameter_name(p.key)}}}" for p in spec.parameters)]


def trial_config_yaml(spec: SweepSpec) -> str:
    """The full training config every trial starts from (base config + fixed overrides + budget)."""
    import yaml

    return yaml.safe_dump(to_dict(spec.train_config({})), sort_keys=False)


def _resources(spec: SweepSpec) -> dict[str, Any]:
    k = spec.katib
    requests = {"cpu": k.cpu, "memory": k.memory}
    limits: dict[str, Any] = {"cpu": k.cpu, "memory": k.memory}
    if k.gpus:
        limits["nvidia.com/gpu"] = str(k.gpus)
    return {"requests": requests, "limits": limits}


def trial_spec(spec: SweepSpec, image: str) -> dict[str, Any]:
    env = [{"name": CONFIG_ENV, "value": trial_config_yaml(spec)},
           {"name": "TQDM_DISABLE", "value": "1"},  # no progress bars in a log that a collector reads
           *({"name": k, "value": v} for k, v in spec.katib.env.items())]
    container = {"name": CONTAINER, "image": image, "command": trial_command(spec), "env": env,
                 "resources": _resources(spec)}
    pod: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if spec.katib.service_account:
        pod["serviceAccountName"] = spec.katib.service_account
    return {"apiVersion": "batch/v1", "kind": "Job",
            "spec": {"backoffLimit": 0, "template": {
                "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}}, "spec": pod}}}


def experiment(spec: SweepSpec, *, image: str = "", namespace: str = "", trials: int = 0,
               parallel: int = 0) -> dict[str, Any]:
    """The Experiment manifest of ``spec`` (``image``/``namespace``/``trials``/``parallel`` override the file)."""
    body: dict[str, Any] = {
        "objective": {"type": "minimize", "objectiveMetricName": spec.metric,
                      "metricStrategies": [{"name": spec.metric, "value": "min"}]},
        "algorithm": {"algorithmName": ALGORITHMS[spec.method]},
        "parallelTrialCount": parallel or spec.parallel_trials,
        "maxTrialCount": trials or spec.trials,
        "maxFailedTrialCount": spec.max_failed_trials,
        "parameters": [parameter(p) for p in spec.parameters],
        "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
        "trialTemplate": {
            "primaryContainerName": CONTAINER,
            "trialParameters": [{"name": trial_parameter_name(p.key), "reference": parameter_name(p.key),
                                 "description": f"training config {p.key}"} for p in spec.parameters],
            "trialSpec": trial_spec(spec, image or spec.katib.image or default_image()),
        },
    }
    if spec.method == "bayes":
        body["algorithm"]["algorithmSettings"] = [{"name": "n_initial_points", "value": str(spec.n_startup())},
                                                  {"name": "random_state", "value": str(spec.seed)}]
    stop = early_stopping(spec)
    if stop is not None:
        body["earlyStopping"] = stop
    return {"apiVersion": API_VERSION, "kind": "Experiment",
            "metadata": {"name": experiment_name(spec), "namespace": namespace or spec.katib.namespace,
                         "labels": {"app.kubernetes.io/part-of": "textrec", "textrec.sweep": experiment_name(spec)}},
            "spec": body}
