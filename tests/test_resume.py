"""Exact resume: an interrupted run, resumed, ends with the same weights as an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from textrec.training import Callback, load_config, train
from textrec.training.checkpoint import CheckpointError, load_checkpoint, resolve_resume

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_config(cache: Path, *overrides: str):
    return load_config(CONFIGS / "smoke.yaml", [
        f"--data.cache_dir={cache}", "--data.train_lines=64", "--data.val_lines=8", "--data.test_lines=8",
        "--data.unseen_font_lines=8", "--loop.epochs=2", "--loop.checkpoint_every_steps=3",
        "--loop.threads=1", *overrides])


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pool-cache")


class StopAfterFirstEpoch(Callback):
    """A clean stop at an epoch boundary (what a time budget or a drained node does)."""

    def on_epoch_end(self, trainer, epoch, metrics):
        trainer.request_stop("test: stop after the first epoch")


class Crash(Exception):
    pass


class CrashAtStep(Callback):
    """A hard failure mid-epoch, after a periodic checkpoint (what a preempted pod sees)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, trainer, step, loss, lines):
        if step == self.step:
            raise Crash(f"simulated preemption at step {step}")


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(run / "checkpoints" / "last.pt")["model"]


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs by {(a[k].float() - b[k].float()).abs().max()}"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cache) -> dict[str, torch.Tensor]:
    """Two epochs in one go."""
    out = tmp_path_factory.mktemp("uninterrupted")
    metrics = train(tiny_config(cache), out)
    assert metrics["epochs"] == 2 and metrics["steps"] == 8
    return weights(out)


def test_one_epoch_then_resume_equals_two_epochs(tmp_path, cache, reference):
    out = tmp_path / "run"
    first = train(tiny_config(cache), out, callbacks=[StopAfterFirstEpoch()])
    assert first["epochs"] == 1
    second = train(tiny_config(cache), out, resume="auto")
    assert second["epochs"] == 2 and second["steps"] == 8
    assert_same_weights(weights(out), reference)
    history = load_checkpoint(out / "checkpoints" / "last.pt")["history"]
    assert [h["epoch"] for h in history] == [1, 2]


def test_resume_after_a_crash_mid_epoch_equals_the_uninterrupted_run(tmp_path, cache, reference):
    out = tmp_path / "run"
    with pytest.raises(Crash):
        train(tiny_config(cache), out, callbacks=[CrashAtStep(7)])
    saved = load_checkpoint(out / "checkpoints" / "last.pt")
    assert (saved["epoch"], saved["step"], saved["step_in_epoch"]) == (1, 6, 2)  # the step-6 checkpoint
    train(tiny_config(cache), out, resume="auto")
    assert_same_weights(weights(out), reference)


def test_resume_with_data_loader_workers_is_exact_too(tmp_path, cache):
    runs = {}
    for name, crash in (("whole", None), ("resumed", CrashAtStep(5))):
        out = tmp_path / name
        cfg = tiny_config(cache, "--data.num_workers=1")
        if crash is not None:
            with pytest.raises(Crash):
                train(cfg, out, callbacks=[crash])
            train(cfg, out, resume="auto")
        else:
            train(cfg, out)
        runs[name] = weights(out)
    assert_same_weights(runs["resumed"], runs["whole"])


def test_explicit_resume_path_must_exist(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        resolve_resume(tmp_path / "missing.pt", tmp_path)
    assert resolve_resume("auto", tmp_path) is None


def test_a_checkpoint_of_another_model_is_refused(tmp_path, cache):
    out = tmp_path / "run"
    train(tiny_config(cache, "--loop.epochs=1"), out)
    with pytest.raises(CheckpointError, match="checkpoint is of model"):
        train(tiny_config(cache, "--model.options.lstm_hidden=16"), out, resume="auto")


def test_a_corrupt_checkpoint_is_named(tmp_path):
    bad = tmp_path / "last.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="last.pt: not a readable checkpoint"):
        load_checkpoint(bad)
