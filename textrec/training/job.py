"""A pipeline's training step: a request in, ``model.pt`` and its metrics out, tracked in MLflow.

The same request trains in this process (the CPU or one GPU), under ``torchrun`` over the GPUs of this
pod, or on several nodes through a launcher the caller passes in (``cluster.trainjob`` for Kubernetes,
so this module stays free of cluster code). Every process runs :mod:`textrec.training.__main__`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textrec import storage, tracking
from textrec.config import ConfigError, to_dict
from textrec.rundir import RunDir
from textrec.training.callbacks import Callback
from textrec.training.config import TrainConfig, load_config
from textrec.training.remote import (
    CheckpointSync,
    checkpoint_location,
    download_outputs,
    restore_checkpoint,
    training_folder,
    upload_outputs,
)


@dataclass(frozen=True)
class TrainRequest:
    """Everything the train_model component passes on."""

    stores: tuple[str, ...]
    config: str | Mapping[str, Any] = ""  # YAML text of a training config, or its dict
    overrides: tuple[str, ...] = ()
    epochs: int = 0
    gpus_per_node: int = 0
    nodes: int = 1
    checkpoint_root: str = ""
    step: tracking.StepTracking = tracking.StepTracking()  # the pipeline run, MLflow server, experiment
    store_uris: tuple[str, ...] = ()  # the stores as the nodes of a multi-node job can reach them
    job_node_selector: Mapping[str, str] = field(default_factory=dict)  # where a multi-node job's pods go
    job_env: Mapping[str, str] = field(default_factory=dict)
    real_val: str = ""  # labelled real lines scored every epoch (data.real_val); "": the config's own
    extra_tags: Mapping[str, str] = field(default_factory=dict)  # on the training run (say, a reviewed store)
    extra_metrics: Mapping[str, float] = field(default_factory=dict)  # likewise (how many reviewed lines)


@dataclass(frozen=True)
class MultiNodeLaunch:
    """What a multi-node launcher gets: the request and the arguments every node's process takes."""

    request: TrainRequest
    args: tuple[str, ...]  # for ``python -m textrec.training``


MultiNodeLauncher = Callable[[MultiNodeLaunch], None]


def train_config(config: str | Mapping[str, Any], stores: Sequence[str], *, epochs: int = 0,
                 overrides: Sequence[str] = (), real_val: str = "") -> TrainConfig:
    """A TrainConfig from YAML text (or its dict), set to train on ``stores`` (and, with ``real_val``,
    to score that labelled real set every epoch), then ``overrides``."""
    import yaml

    parsed = yaml.safe_load(config) if isinstance(config, str) else config
    if parsed is not None and not isinstance(parsed, Mapping):
        raise ValueError(f"training config: expected a YAML mapping of sections, got {type(parsed).__name__}")
    data = to_dict(dict(parsed or {}))
    data["data"] = {**data.get("data", {}), "mode": "store", "stores": [str(s) for s in stores]}
    if real_val:
        data["data"]["real_val"] = real_val
    if epochs > 0:
        data["loop"] = {**data.get("loop", {}), "epochs": epochs}
    try:
        return load_config(data, list(overrides))
    except ConfigError as e:
        raise ValueError(f"training config: {e}") from e


def data_kind(config: str | Mapping[str, Any], *, overrides: Sequence[str] = ()) -> str:
    """``data.kind`` of a training config (YAML text or its dict) after ``overrides``: ``lines``, or
    ``pages`` for a paragraph model, which trains on the dataset's page store."""
    return str(_data_section(config, overrides).kind)


def page_layout(config: str | Mapping[str, Any], *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """``data.page`` of a training config after ``overrides``: the page layout the pipeline's pages are
    rendered with (empty: the page renderer's defaults)."""
    return dict(_data_section(config, overrides).page)


def _data_section(config: str | Mapping[str, Any], overrides: Sequence[str]) -> Any:
    import yaml

    parsed = yaml.safe_load(config) if isinstance(config, str) else config
    if parsed is not None and not isinstance(parsed, Mapping):
        raise ValueError(f"training config: expected a YAML mapping of sections, got {type(parsed).__name__}")
    try:
        return load_config(to_dict(dict(parsed or {})), list(overrides)).data
    except ConfigError as e:
        raise ValueError(f"training config: {e}") from e


def synth_recipe(config: str | Mapping[str, Any], *, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The ``data.synth`` settings of a training config (YAML text or its dict) after ``overrides``:
    what the pipeline's synthesize step renders with, so its lines are the ones the recipe asks for."""
    return dict(_data_section(config, overrides).synth)


@dataclass(frozen=True)
class TrainingInputs:
    """What the pipeline's train step trains on: stores, config text, real set, what the run records."""

    stores: tuple[str, ...]
    config: str
    real_val: str
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def pipeline_training_inputs(dataset_dir: str | os.PathLike, config: str, overrides: Sequence[str], *,
                             real_val: str = "", reviewed_store: str = "",
                             reviewed_weight: float = 0.0) -> TrainingInputs:
    """The stores of a pipeline dataset folder the config trains on: its page store for
    ``data.kind: pages`` (whose ``real_val`` then holds pages and is left to evaluation), else its line
    stores. A reviewed store (``textrec review``) gives the real set when ``real_val`` is empty and,
    with ``reviewed_weight`` > 0, joins training as an optional store of that weight."""
    import yaml

    from textrec.data.sources import task_stores

    if data_kind(config, overrides=overrides) == "pages":  # a paragraph model
        return TrainingInputs(tuple(str(p) for p in task_stores(dataset_dir, "page")), config, "")
    stores = tuple(str(p) for p in task_stores(dataset_dir, "line"))
    if not reviewed_store:
        return TrainingInputs(stores, config, real_val)
    from textrec.review.store import reviewed_inputs

    reviewed = reviewed_inputs(reviewed_store)
    metrics = reviewed.metrics()
    if reviewed_weight > 0:
        parsed = yaml.safe_load(config) or {}
        data = parsed.setdefault("data", {})
        data["optional_stores"] = [*data.get("optional_stores", []), reviewed.store]
        data["optional_weight"] = reviewed_weight
        config = yaml.safe_dump(parsed, sort_keys=False)
        metrics["reviewed_weight"] = reviewed_weight
    return TrainingInputs(stores, config, real_val or reviewed.real_val, reviewed.tags(), metrics)


def store_uris(artifact_uri: str, stores: Sequence[str]) -> tuple[str, ...]:
    """Where other pods can read the stores of a dataset artifact: its object-store URI (KFP's MinIO
    ``minio://`` is S3 to boto3) joined with each store's name; local artifacts stay local paths."""
    base = artifact_uri.rstrip("/")
    if base.startswith("minio://"):
        base = "s3://" + base[len("minio://"):]
    if not storage.is_s3(base):
        return tuple(str(s) for s in stores)
    return tuple(f"{base}/{Path(s).name}" for s in stores)


def train_here(cfg: TrainConfig, out_dir: str | os.PathLike, *, checkpoint_uri: str = "", run_id: str = "",
               tracking_uri: str = "", callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train in this process (one of several ranks under torchrun, or alone), resuming if possible.

    ``callbacks`` run after the tracking and checkpoint-sync ones, so they see every checkpoint saved.
    """
    from textrec.tracking.callback import MlflowCallback
    from textrec.training import train

    out = Path(out_dir)
    own: list[Callback] = []
    if run_id:
        own.append(MlflowCallback(run_id, tracking_uri or None))
    remote = checkpoint_uri if storage.is_s3(checkpoint_uri) else ""
    if remote:
        restore_checkpoint(remote, out)
        own.append(CheckpointSync(remote))
    metrics = train(cfg, out, callbacks=[*own, *callbacks], resume="auto")
    if remote and int(os.environ.get("RANK", "0")) == 0:
        upload_outputs(out, remote)
    return metrics


def entry_args(cfg: TrainConfig, out: str, checkpoint_uri: str, run_id: str, tracking_uri: str) -> tuple[str, ...]:
    """The arguments of ``python -m textrec.training`` for one training process."""
    import yaml

    return ("--config-yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False), "--out", out,
            "--checkpoint-uri", checkpoint_uri, "--run-id", run_id, "--tracking-uri", tracking_uri)


def train_from_request(req: TrainRequest, model_dir: str | os.PathLike, *,
                multi_node: MultiNodeLauncher | None = None) -> dict[str, Any]:
    """Train (in process, under torchrun, or as a multi-node job) and put the run's outputs in ``model_dir``.

    The training is one MLflow child run, reopened when a retried step resumes; its params, per-epoch
    metrics, system metrics and lineage (dataset hash, git commit, pipeline run id) go there.
    """
    from textrec.data.store import describe_stores

    cfg = train_config(req.config, req.stores, epochs=req.epochs, overrides=req.overrides, real_val=req.real_val)
    ckpt = checkpoint_location(req.checkpoint_root, req.step.pipeline_run_id)
    dataset_hash = describe_stores(req.stores)["content_hash"]
    uri = req.step.uri
    with tracking.step_run("train", req.step.pipeline_run_id, tracking_uri=uri, experiment=req.step.experiment,
                           system_metrics=True, resume=True,
                           tags={tracking.TAG_DATASET: dataset_hash, **req.extra_tags}) as run_id:
        tracking.set_lineage(run_id, {tracking.TAG_DATASET: dataset_hash, **req.extra_tags}, tracking_uri=uri)
        if req.extra_metrics:
            tracking.mlflow_client(uri).log_batch(run_id, metrics=_metrics_now(req.extra_metrics))
        with training_folder(ckpt) as out:
            if req.nodes > 1:
                _train_multi_node(req, cfg, ckpt, run_id, out, multi_node)
            elif req.gpus_per_node > 1:
                _train_torchrun(req, cfg, ckpt, run_id, out)
            else:
                train_here(cfg, out, checkpoint_uri=ckpt, run_id=run_id, tracking_uri=req.step.tracking_uri)
            Path(model_dir).mkdir(parents=True, exist_ok=True)
            for path in RunDir(out).outputs():
                shutil.copyfile(path, Path(model_dir) / path.name)
    metrics = RunDir(model_dir).read_metrics()
    return {**metrics, "dataset_hash": dataset_hash, "mlflow_run_id": run_id, "checkpoints": ckpt}


def _metrics_now(values: Mapping[str, float]) -> list[Any]:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in values.items()]


def _train_torchrun(req: TrainRequest, cfg: TrainConfig, ckpt: str, run_id: str, out: Path) -> None:
    """N GPUs in this pod: one process per GPU under torchrun, rank 0 tracks and writes files."""
    args = entry_args(cfg, str(out), ckpt, run_id, tracking.resolve_tracking_uri(req.step.uri))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={req.gpus_per_node}",
           "-m", "textrec.training", *args]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {req.gpus_per_node} processes failed (exit {done.returncode})")


def _train_multi_node(req: TrainRequest, cfg: TrainConfig, ckpt: str, run_id: str, out: Path,
                      launcher: MultiNodeLauncher | None) -> None:
    """Several nodes through ``launcher``; model and checkpoints meet on the S3 prefix."""
    from textrec.config import replace

    if launcher is None:
        raise ValueError("nodes > 1 needs a multi-node launcher (the pipeline's train step passes the "
                         "Kubernetes one); train on one node here")
    if not storage.is_s3(ckpt):
        raise ValueError("nodes > 1 needs checkpoint_root to be an s3:// prefix that every node can reach")
    if len(req.store_uris) != len(req.stores) or not all(storage.is_s3(u) for u in req.store_uris):
        raise ValueError("nodes > 1 needs the line stores on S3 (a pipeline root in S3/MinIO) so that every "
                         f"node can read them; got {list(req.store_uris)}")
    if cfg.data.real_val and not storage.is_s3(cfg.data.real_val):
        raise ValueError(f"nodes > 1 needs data.real_val on S3 so that every node can read it; got "
                         f"{cfg.data.real_val!r}")
    cfg = replace(cfg, **{"data.stores": tuple(req.store_uris)})
    args = entry_args(cfg, "/tmp/textrec-train", ckpt, run_id, tracking.resolve_tracking_uri(req.step.uri))
    launcher(MultiNodeLaunch(req, args))
    download_outputs(ckpt, out)


def pod_plan(gpus_per_node: int, nodes: int, gpu_node_selector: Mapping[str, str]) -> tuple[int, dict[str, str]]:
    """(GPUs, node selector) of the train step's own pod: ``gpus_per_node`` GPUs on a GPU node when it
    trains on one node; no GPU and no GPU node when it trains on the CPU or only launches a multi-node job.

    >>> pod_plan(4, 1, {"gpu": "yes"}), pod_plan(4, 2, {"gpu": "yes"}), pod_plan(0, 1, {"gpu": "yes"})
    ((4, {'gpu': 'yes'}), (0, {}), (0, {}))
    """
    if nodes < 1 or gpus_per_node < 0:
        raise ValueError(f"nodes must be >= 1 and gpus_per_node >= 0, got nodes={nodes}, "
                         f"gpus_per_node={gpus_per_node}")
    on_gpu = nodes == 1 and gpus_per_node > 0
    return (gpus_per_node, dict(gpu_node_selector)) if on_gpu else (0, {})
