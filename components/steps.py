"""The work behind each pipeline component, as plain functions.

A KFP component must be self-contained (its source is shipped on its own), so each one is a short
function that imports and calls these; these call textrec. Nothing here imports kfp, so tests and
notebooks run the steps directly.

``python -m components.steps train ...`` is what every training process runs: in-process for one GPU
or CPU, under ``torchrun`` for N GPUs in one pod, and in each node of a TrainJob/PyTorchJob.

Checkpoints go to a stable place keyed by the pipeline run (``<checkpoint_root>/<run key>/``), so a
retried training step resumes where the failed attempt stopped: a local folder (a PVC mount) is
trained into directly; an ``s3://`` prefix is restored before training and updated whenever the
loop writes a checkpoint.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textrec import storage, tracking
from textrec.training.callbacks import Callback

DATA_KINDS = ("none", "emnist", "iam")
EVAL_SPLIT = "test"
# GPU nodes are commonly tainted so that only pods asking for GPUs land there.
GPU_TOLERATIONS = ({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},)


# ------------------------------------------------------------------------------------------------ data

def parse_source(data_source: str) -> tuple[str, str]:
    """``"emnist:s3://b/gzip.zip"`` -> ``("emnist", "s3://b/gzip.zip")``; ``"none"`` -> ``("none", "")``."""
    kind, _, uri = data_source.strip().partition(":")
    if kind not in DATA_KINDS or (kind != "none" and not uri) or (kind == "none" and uri):
        raise ValueError(f"data_source {data_source!r}: expected 'none', 'emnist:<uri>' or 'iam:<uri>' "
                         "(uri: a local path, an https:// URL for EMNIST, or an s3:// URI)")
    return kind, uri


def ingest(data_source: str, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read the real handwriting named by ``data_source`` into ``out_dir`` (``chars.h5`` or ``iam.h5``)."""
    kind, uri = parse_source(data_source)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info: dict[str, Any] = {"kind": kind, "uri": uri}
    if kind == "emnist":
        from textrec.data.emnist import ingest_emnist
        from textrec.data.store import CharStore

        info["content_hash"] = CharStore(ingest_emnist(uri, out / "chars.h5")).content_hash
    elif kind == "iam":
        from textrec.data.iam import ingest_iam
        from textrec.data.store import LineStore

        info["content_hash"] = LineStore(ingest_iam(uri, out / "iam.h5")).content_hash
    _write_json(out / "source.json", info)
    return info


def line_stores(folder: str | os.PathLike) -> list[Path]:
    """The line stores (``*.h5`` of format textrec-lines) in a dataset folder, by name."""
    import h5py

    from textrec.data.store import LINES_FORMAT

    found = []
    for p in sorted(Path(folder).glob("*.h5")):
        with h5py.File(p, "r") as f:
            if f.attrs.get("format") == LINES_FORMAT:
                found.append(p)
    if not found:
        raise FileNotFoundError(f"{folder}: no line stores (*.h5 of format {LINES_FORMAT!r})")
    return found


def describe(stores: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """Names, line counts per split, and one content hash over all the stores."""
    from textrec.data.store import LineStore

    infos = [LineStore(p).info() for p in stores]
    splits: dict[str, int] = {}
    for info in infos:
        for k, v in info["splits"].items():
            splits[k] = splits.get(k, 0) + v
    return {"stores": [Path(p).name for p in stores], "lines": sum(i["n"] for i in infos), "splits": splits,
            "content_hash": tracking.combine_hashes(i["content_hash"] for i in infos)}


def synthesize_lines(n_lines: int, source_dir: str | os.PathLike, out_dir: str | os.PathLike, *,
                     seed: int = 0, emnist_lines: int = 0) -> dict[str, Any]:
    """Synthetic lines, plus EMNIST-lines when EMNIST was ingested and IAM when IAM was: the merged data."""
    from textrec.data.synth import synthesize

    src, out = Path(source_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stores = [synthesize(n_lines, out / "synth.h5", seed=seed)]
    if (src / "chars.h5").is_file():
        from textrec.data.emnist import compose_lines

        stores.append(compose_lines(src / "chars.h5", emnist_lines or n_lines, out / "emnist_lines.h5", seed=seed))
    if (src / "iam.h5").is_file():
        shutil.copyfile(src / "iam.h5", out / "iam.h5")
        stores.append(out / "iam.h5")
    return describe(stores)


# ------------------------------------------------------------------------------------------- training

def checkpoint_location(checkpoint_root: str, pipeline_run_id: str) -> str:
    """``<root>/<run key>`` where a pipeline run's training keeps checkpoints ('' without a root)."""
    if not checkpoint_root:
        return ""
    key = "run-" + hashlib.sha256(pipeline_run_id.encode()).hexdigest()[:16]
    if storage.is_s3(checkpoint_root):
        return f"{checkpoint_root.rstrip('/')}/{key}"
    return str(Path(checkpoint_root).resolve() / key)


def train_config(config: str | Mapping[str, Any], stores: Sequence[str], *, epochs: int = 0,
                 overrides: Sequence[str] = ()):
    """A TrainConfig from YAML text (or its dict), set to train on ``stores``, then ``overrides``."""
    import yaml

    from textrec.config import ConfigError, to_dict
    from textrec.training.config import load_config

    parsed = yaml.safe_load(config) if isinstance(config, str) else config
    if parsed is not None and not isinstance(parsed, Mapping):
        raise ValueError(f"training config: expected a YAML mapping of sections, got {type(parsed).__name__}")
    data = to_dict(dict(parsed or {}))
    data["data"] = {**data.get("data", {}), "mode": "store", "stores": [str(s) for s in stores]}
    if epochs > 0:
        data["loop"] = {**data.get("loop", {}), "epochs": epochs}
    with tempfile.TemporaryDirectory(prefix="textrec-config-") as tmp:
        path = Path(tmp) / "config.yaml"
        _write_yaml(path, data)
        try:
            return load_config(path, list(overrides))
        except ConfigError as e:
            raise ValueError(f"training config: {e}") from e


class CheckpointSync(Callback):
    """Copy the run's checkpoints to ``remote`` (s3://...) whenever the loop has written a new one."""

    NAMES = ("last.pt", "best.pt")

    def __init__(self, remote: str) -> None:
        self.remote = remote.rstrip("/")
        self.seen: dict[str, float] = {}

    def sync(self, out_dir: Path) -> None:
        for name in self.NAMES:
            path = out_dir / "checkpoints" / name
            if path.is_file() and path.stat().st_mtime != self.seen.get(name):
                self.seen[name] = path.stat().st_mtime
                storage.upload(path, f"{self.remote}/checkpoints/{name}")

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.sync(Path(trainer.out_dir))

    def on_step_end(self, trainer, step: int, loss: float, lines: int) -> None:
        self.sync(Path(trainer.out_dir))

    def on_train_end(self, trainer, metrics: dict[str, Any]) -> None:
        self.sync(Path(trainer.out_dir))


def restore_checkpoint(remote: str, out_dir: Path) -> bool:
    """Fetch ``remote/checkpoints/last.pt`` into ``out_dir`` if an earlier attempt left one."""
    uri = f"{remote.rstrip('/')}/checkpoints/last.pt"
    if not storage.exists(uri):
        return False
    storage.download(uri, out_dir / "checkpoints" / "last.pt")
    return True


def train_here(cfg, out_dir: str | os.PathLike, *, checkpoint_uri: str = "", run_id: str = "",
               tracking_uri: str = "", callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Train in this process (one of several ranks under torchrun, or alone), resuming if possible.

    ``callbacks`` run after the tracking and checkpoint-sync ones, so they see every checkpoint saved.
    """
    from textrec.training import train

    out = Path(out_dir)
    own: list[Callback] = []
    if run_id:
        own.append(tracking.MlflowCallback(run_id, tracking_uri or None))
    remote = checkpoint_uri if storage.is_s3(checkpoint_uri) else ""
    if remote:
        restore_checkpoint(remote, out)
        own.append(CheckpointSync(remote))
    callbacks = [*own, *callbacks]
    metrics = train(cfg, out, callbacks=callbacks, resume="auto")
    if remote and int(os.environ.get("RANK", "0")) == 0:
        for name in ("model.pt", "metrics.json", "config.yaml"):
            if (out / name).is_file():
                storage.upload(out / name, f"{remote}/{name}")
    return metrics


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
    pipeline_run_id: str = "local"
    tracking_uri: str = ""
    experiment: str = tracking.EXPERIMENT
    store_uris: tuple[str, ...] = ()  # the stores as the nodes of a multi-node job can reach them
    job_node_selector: Mapping[str, str] = field(default_factory=dict)  # where a multi-node job's pods go
    job_env: Mapping[str, str] = field(default_factory=dict)


def store_uris(artifact_uri: str, stores: Sequence[str]) -> tuple[str, ...]:
    """Where other pods can read the stores of a dataset artifact: its object-store URI (KFP's MinIO
    ``minio://`` is S3 to boto3) joined with each store's name; local artifacts stay local paths."""
    base = artifact_uri.rstrip("/")
    if base.startswith("minio://"):
        base = "s3://" + base[len("minio://"):]
    if not storage.is_s3(base):
        return tuple(str(s) for s in stores)
    return tuple(f"{base}/{Path(s).name}" for s in stores)


def numeric(result: Mapping[str, Any]) -> dict[str, float]:
    """The plain numbers in a result (what a KFP Metrics artifact can hold)."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and v == v}


def train_model(req: TrainRequest, model_dir: str | os.PathLike) -> dict[str, Any]:
    """Train (in process, under torchrun, or as a multi-node job) and put model.pt in ``model_dir``.

    The training is one MLflow child run, reopened when a retried step resumes; its params, per-epoch
    metrics, system metrics and lineage (dataset hash, git commit, pipeline run id) go there.
    """
    cfg = train_config(req.config, req.stores, epochs=req.epochs, overrides=req.overrides)
    ckpt = checkpoint_location(req.checkpoint_root, req.pipeline_run_id)
    dataset_hash = describe(req.stores)["content_hash"]
    model_dir = Path(model_dir)
    with tracking.step_run("train", req.pipeline_run_id, tracking_uri=req.tracking_uri or None,
                           experiment=req.experiment, system_metrics=True, resume=True,
                           tags={tracking.TAG_DATASET: dataset_hash}) as run_id:
        tracking.set_lineage(run_id, {tracking.TAG_DATASET: dataset_hash}, tracking_uri=req.tracking_uri or None)
        with _training_folder(ckpt) as out:
            if req.nodes > 1:
                _train_multi_node(req, cfg, ckpt, run_id, out)
            elif req.gpus_per_node > 1:
                _train_torchrun(req, cfg, ckpt, run_id, out)
            else:
                train_here(cfg, out, checkpoint_uri=ckpt, run_id=run_id, tracking_uri=req.tracking_uri)
            model_dir.mkdir(parents=True, exist_ok=True)
            for name in ("model.pt", "metrics.json", "config.yaml"):
                if (out / name).is_file():
                    shutil.copyfile(out / name, model_dir / name)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    return {**metrics, "dataset_hash": dataset_hash, "mlflow_run_id": run_id, "checkpoints": ckpt}


@contextmanager
def _training_folder(ckpt: str) -> Iterator[Path]:
    """Where training writes: the stable checkpoint folder itself when local (a PVC, say), else a
    temporary folder whose checkpoints CheckpointSync mirrors to the S3 prefix."""
    if ckpt and not storage.is_s3(ckpt):
        Path(ckpt).mkdir(parents=True, exist_ok=True)
        yield Path(ckpt)
        return
    with tempfile.TemporaryDirectory(prefix="textrec-train-") as tmp:
        yield Path(tmp)


def _entry_args(cfg, out: str, ckpt: str, run_id: str, tracking_uri: str) -> list[str]:
    import yaml

    from textrec.config import to_dict

    return ["--config-yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False), "--out", out,
            "--checkpoint-uri", ckpt, "--run-id", run_id, "--tracking-uri", tracking_uri]


def _train_torchrun(req: TrainRequest, cfg, ckpt: str, run_id: str, out: Path) -> None:
    """N GPUs in this pod: one process per GPU under torchrun, rank 0 tracks and writes files."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={req.gpus_per_node}",
           "-m", "components.steps", "train",
           *_entry_args(cfg, str(out), ckpt, run_id, tracking.resolve_tracking_uri(req.tracking_uri or None))]
    done = subprocess.run(cmd, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"torchrun with {req.gpus_per_node} processes failed (exit {done.returncode})")


def _train_multi_node(req: TrainRequest, cfg, ckpt: str, run_id: str, out: Path) -> None:
    """Several nodes through the training operator; model and checkpoints meet on the S3 prefix."""
    from components import trainjob

    if not storage.is_s3(ckpt):
        raise ValueError("nodes > 1 needs checkpoint_root to be an s3:// prefix that every node can reach")
    if len(req.store_uris) != len(req.stores) or not all(storage.is_s3(u) for u in req.store_uris):
        raise ValueError("nodes > 1 needs the line stores on S3 (a pipeline root in S3/MinIO) so that every "
                         f"node can read them; got {list(req.store_uris)}")
    cfg = _with_stores(cfg, req.store_uris)
    env = {k: os.environ[k] for k in trainjob.PASS_ENV if os.environ.get(k)}
    env.update(req.job_env)
    job = trainjob.DistributedJob(
        name=trainjob.job_name(req.pipeline_run_id), namespace=trainjob.current_namespace(),
        image=os.environ.get("TEXTREC_IMAGE", ""), nodes=req.nodes, gpus_per_node=req.gpus_per_node,
        args=tuple(_entry_args(cfg, "/tmp/textrec-train", ckpt, run_id,
                               tracking.resolve_tracking_uri(req.tracking_uri or None))),
        env=env, secret_env=_secret_env(), node_selector=dict(req.job_node_selector),
        tolerations=GPU_TOLERATIONS if req.gpus_per_node else ())
    trainjob.run(job)
    for name in ("model.pt", "metrics.json", "config.yaml"):
        storage.download(f"{ckpt}/{name}", out / name)


def _with_stores(cfg, stores: Sequence[str]):
    from textrec.config import replace

    return replace(cfg, **{"data.stores": tuple(stores)})


def _secret_env() -> dict[str, str]:
    """S3 credentials for the training pods, from the secret named in ``TEXTREC_S3_SECRET``."""
    secret = os.environ.get("TEXTREC_S3_SECRET", "")
    if not secret:
        return {}
    return {k: f"{secret}/{k}" for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}


# ----------------------------------------------------------------------------------------- evaluation

def eval_samples(stores: Sequence[str | os.PathLike], split: str = EVAL_SPLIT) -> list[tuple[Any, str, str]]:
    """(image, truth, name) of every line in ``split`` of each store, in store order."""
    from textrec.data.store import LineStore

    samples = []
    for p in stores:
        store = LineStore(p)
        if split not in store.splits:
            continue
        samples += [(store.image(int(i)), store.text(int(i)), f"{Path(p).stem}/{split}/{int(i)}")
                    for i in store.indices(split)]
    if not samples:
        raise ValueError(f"no {split!r} lines in {[str(p) for p in stores]}")
    return samples


def evaluate_model(model_pt: str | os.PathLike, stores: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   *, pipeline_run_id: str = "local", tracking_uri: str = "",
                   experiment: str = tracking.EXPERIMENT) -> dict[str, Any]:
    """CER/WER on the fixed test split, an HTML report and a picture of the worst lines, logged to MLflow."""
    from textrec.evaluate import evaluate, write_report

    samples = eval_samples(stores)
    eval_hash = tracking.eval_set_hash((s[0], s[1]) for s in samples)
    # The step's run spans the evaluation itself, so its wall time in MLflow is the step's.
    with tracking.step_run("evaluate", pipeline_run_id, tracking_uri=tracking_uri or None, experiment=experiment,
                           tags={tracking.TAG_EVAL_SET: eval_hash}) as run_id:
        report = evaluate(model_pt, samples,
                          source=f"{EVAL_SPLIT} split of {', '.join(Path(p).name for p in stores)}")
        out = Path(out_dir)
        html = write_report(report, out)
        grid = prediction_grid(report.rows, out / "predictions.png")
        scores = {"test_cer": report.cer, "test_wer": report.wer, "test_n": report.n}
        _log(scores, [html, out / "report.json", grid])
        tracking.log_to_parent(run_id, scores, tracking_uri=tracking_uri or None)
    result = {"cer": report.cer, "wer": report.wer, "n": report.n, "eval_set_hash": eval_hash,
              "report": str(html)}
    return result


def _log(metrics: Mapping[str, float], files: Sequence[Path]) -> None:
    """Metrics and files to the active run (the step's)."""
    import mlflow

    mlflow.log_metrics(dict(metrics))
    for f in files:
        if Path(f).is_file():
            mlflow.log_artifact(str(f))


def prediction_grid(rows: Sequence[Any], out_png: str | os.PathLike, n: int = 12) -> Path:
    """A PNG of the worst lines: each image with its truth and the model's reading beneath it."""
    from PIL import Image, ImageDraw

    from textrec.data.show import _font

    shown = sorted((r for r in rows if r.image is not None), key=lambda r: r.cer, reverse=True)[:n]
    height, width, text = 48, 900, 16
    cell = height + 2 * (text + 4) + 10
    canvas = Image.new("RGB", (width, max(1, len(shown)) * cell), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(text)
    for k, r in enumerate(shown):
        img = Image.fromarray(r.image)
        scale = min(height / img.height, width / img.width)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
        y = k * cell
        canvas.paste(img.convert("RGB"), (0, y))
        draw.text((0, y + height + 2), f"truth: {r.truth}", font=font, fill=(20, 20, 20))
        draw.text((0, y + height + text + 6), f"read:  {r.prediction}   (CER {r.cer:.0%})", font=font,
                  fill=(170, 0, 0) if r.cer > 0 else (0, 120, 0))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".png", dir=out.parent)
    os.close(fd)
    canvas.save(tmp)
    os.replace(tmp, out)
    return out


# ------------------------------------------------------------------------------------------- registry

def register_model(model_pt: str | os.PathLike, stores: Sequence[str | os.PathLike], *, test_cer: float,
                   eval_hash: str, model_name: str = tracking.MODEL_NAME, margin: float = 0.0,
                   pipeline_run_id: str = "local", tracking_uri: str = "", experiment: str = tracking.EXPERIMENT,
                   out_dir: str | os.PathLike | None = None) -> tracking.Decision:
    """Log and register the model (alias ``challenger``), then let the promotion gate decide ``champion``."""
    from textrec.evaluate import evaluate

    uri = tracking_uri or None

    def reevaluate(champion_pt: Path) -> float:
        return evaluate(champion_pt, eval_samples(stores)).cer

    with tracking.step_run("register", pipeline_run_id, tracking_uri=uri, experiment=experiment) as run_id:
        tags = {tracking.TAG_PIPELINE_RUN: pipeline_run_id, tracking.TAG_GIT: tracking.git_commit(),
                tracking.TAG_DATASET: describe(stores)["content_hash"]}
        version = tracking.log_model_version(model_pt, run_id, model_name=model_name, tags=tags, tracking_uri=uri)
        decision = tracking.promote(model_name, version, challenger_cer=test_cer, eval_hash=eval_hash,
                                    margin=margin, reevaluate=reevaluate, tracking_uri=uri)
        path = _write_json(Path(out_dir or tempfile.mkdtemp(prefix="textrec-register-")) / "decision.json",
                           decision.to_dict())
        _log({"promoted": float(decision.promoted), "challenger_cer": test_cer}, [path])
        tracking.set_lineage(run_id, {"textrec.model_version": version,
                                      "textrec.promoted": str(decision.promoted).lower()}, tracking_uri=uri)
    return decision


# -------------------------------------------------------------------------------------------- helpers

def _write_json(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)
    return path


def _write_yaml(path: Path, data: Any) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m components.steps",
                                description="Run one training process (alone, or one rank under torchrun).")
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train")
    t.add_argument("--config-yaml", required=True, help="the full training config, as YAML text")
    t.add_argument("--out", required=True, help="this node's training folder")
    t.add_argument("--checkpoint-uri", default="", help="s3:// prefix to resume from and save to")
    t.add_argument("--run-id", default="", help="MLflow run to log to (rank 0 only)")
    t.add_argument("--tracking-uri", default="")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import yaml

    from textrec.config import from_dict
    from textrec.training.config import TrainConfig

    a = _parse_args(argv)
    cfg = from_dict(TrainConfig, yaml.safe_load(a.config_yaml) or {})
    train_here(cfg, a.out, checkpoint_uri=a.checkpoint_uri, run_id=a.run_id, tracking_uri=a.tracking_uri)
    return 0


if __name__ == "__main__":
    sys.exit(main())
