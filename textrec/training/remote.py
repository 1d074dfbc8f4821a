"""Checkpoints that outlive a pod: where a pipeline run trains, and mirroring to ``s3://``.

A pipeline step may be retried on another node, so its checkpoints go to a stable place keyed by the
pipeline run (``<checkpoint_root>/<run key>/``): a local folder (a PVC mount) is trained into directly;
an ``s3://`` prefix is restored before training and updated whenever the loop writes a checkpoint.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from textrec import storage
from textrec.rundir import RunDir
from textrec.training.callbacks import Callback


def checkpoint_location(checkpoint_root: str, pipeline_run_id: str) -> str:
    """``<root>/<run key>`` where a pipeline run's training keeps checkpoints ('' without a root)."""
    if not checkpoint_root:
        return ""
    key = "run-" + hashlib.sha256(pipeline_run_id.encode()).hexdigest()[:16]
    if storage.is_s3(checkpoint_root):
        return f"{checkpoint_root.rstrip('/')}/{key}"
    return str(Path(checkpoint_root).resolve() / key)


@contextmanager
def training_folder(location: str) -> Iterator[Path]:
    """Where training writes: ``location`` itself when it is a local folder (a PVC, say), else a
    temporary folder whose checkpoints :class:`CheckpointSync` mirrors to the S3 prefix."""
    if location and not storage.is_s3(location):
        Path(location).mkdir(parents=True, exist_ok=True)
        yield Path(location)
        return
    with tempfile.TemporaryDirectory(prefix="textrec-train-") as tmp:
        yield Path(tmp)


class CheckpointSync(Callback):
    """Copy the run's checkpoints to ``remote`` (s3://...) whenever the loop has written a new one."""

    def __init__(self, remote: str) -> None:
        self.remote = remote.rstrip("/")
        self.seen: dict[str, float] = {}

    def sync(self, out_dir: Path) -> None:
        for name in RunDir.CHECKPOINT_FILES:
            path = out_dir / name
            if path.is_file() and path.stat().st_mtime != self.seen.get(name):
                self.seen[name] = path.stat().st_mtime
                storage.upload(path, f"{self.remote}/{name}")

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.sync(Path(trainer.out_dir))

    def on_step_end(self, trainer: Any, step: int, loss: float, lines: int) -> None:
        self.sync(Path(trainer.out_dir))

    def on_train_end(self, trainer: Any, metrics: dict[str, Any]) -> None:
        self.sync(Path(trainer.out_dir))


def restore_checkpoint(remote: str, out_dir: str | Path) -> bool:
    """Fetch the last checkpoint under ``remote`` into ``out_dir`` if an earlier attempt left one."""
    run = RunDir(out_dir)
    uri = f"{remote.rstrip('/')}/{run.last.relative_to(run.root).as_posix()}"
    if not storage.exists(uri):
        return False
    storage.download(uri, run.last)
    return True


def upload_outputs(out_dir: str | Path, remote: str) -> None:
    """A finished run's model, metrics and config to ``remote`` (where other nodes and steps find them)."""
    for path in RunDir(out_dir).outputs():
        storage.upload(path, f"{remote.rstrip('/')}/{path.name}")


def download_outputs(remote: str, out_dir: str | Path) -> None:
    """The model, metrics and config that a run uploaded to ``remote``."""
    for name in RunDir.OUTPUTS:
        storage.download(f"{remote.rstrip('/')}/{name}", Path(out_dir) / name)
