"""Hooks into the training loop: progress, time budget, early stopping, best checkpoint, tracking.

Callbacks run on rank 0 only. They may read the trainer (``config``, ``model``, ``out_dir``,
``epoch``, ``step``, ``is_main``, ``history``) and ask it to stop with ``trainer.request_stop(why)``;
the loop shares that decision with every rank. A callback with state that must survive a resume
(the best score so far, say) returns it from ``state_dict`` and takes it back in ``load_state_dict``;
the trainer keeps it in the checkpoint under the callback's class name.

MLflow tracking (``textrec.tracking``) is just another :class:`Callback`, so the loop never imports it.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Protocol

from textrec.rundir import RunDir


class Trainer(Protocol):
    """What a callback may read from and ask of the trainer (``textrec.training.loop.Trainer`` is one)."""

    config: Any  # the run's TrainConfig
    out_dir: Path
    run: RunDir
    epoch: int
    step: int
    is_main: bool
    world_size: int
    history: list[dict[str, Any]]

    def request_stop(self, reason: str) -> None: ...
    def save_checkpoint(self, path: str | os.PathLike) -> None: ...
    def elapsed(self) -> float: ...
    def steps_this_epoch(self) -> int: ...
    def log(self, message: str) -> None: ...


class Callback:
    """No-op hooks; override the ones you need."""

    def on_train_start(self, trainer: Trainer) -> None:
        pass

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        pass

    def on_step_end(self, trainer: Trainer, step: int, loss: float, lines: int) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        pass

    def on_train_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class EarlyStopping(Callback):
    """Stop when ``monitor`` (lower is better) has not improved for ``patience`` epochs."""

    def __init__(self, patience: int, monitor: str = "val_cer", min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"early stopping patience must be at least 1, got {patience}")
        self.patience, self.monitor, self.min_delta = patience, monitor, min_delta
        self.best, self.waited = math.inf, 0

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.monitor)
        if value is None:
            return
        if value < self.best - self.min_delta:
            self.best, self.waited = float(value), 0
            return
        self.waited += 1
        if self.waited >= self.patience:
            trainer.request_stop(f"{self.monitor} has not improved for {self.patience} epochs "
                                 f"(best {self.best:.4f})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "waited": self.waited, "monitor": self.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor", "val_cer") != self.monitor:
            return  # a best value of another metric says nothing about this one
        self.best, self.waited = float(state["best"]), int(state["waited"])


class BestCheckpoint(Callback):
    """Write ``OUT/checkpoints/best.pt`` whenever ``monitor`` reaches a new low (the trainer monitors
    ``real_val_cer`` when the run has labelled real lines, ``val_cer`` otherwise)."""

    def __init__(self, monitor: str = "val_cer") -> None:
        self.monitor, self.best, self.best_epoch = monitor, math.inf, -1

    def path(self, trainer: Trainer) -> Path:
        return trainer.run.best

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        value = metrics.get(self.monitor)
        if value is None or not value < self.best:
            return
        self.best, self.best_epoch = float(value), epoch
        trainer.save_checkpoint(self.path(trainer))

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_epoch": self.best_epoch, "monitor": self.monitor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("monitor", "val_cer") != self.monitor:
            return  # resumed with another metric to watch: its first value makes the next best.pt
        self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])


class TimeBudget(Callback):
    """Ask to stop once the run has trained ``max_minutes`` (counted across resumes)."""

    def __init__(self, max_minutes: float) -> None:
        self.max_s = max_minutes * 60.0
        self.stopped = False

    def on_step_end(self, trainer: Trainer, step: int, loss: float, lines: int) -> None:
        if not self.stopped and trainer.elapsed() >= self.max_s:
            self.stopped = True
            trainer.request_stop(f"time budget of {self.max_s / 60:.1f} min reached at step {step}")


class ProgressBar(Callback):
    """A tqdm bar per epoch with the running loss and lines per second."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.loss = math.nan
        self.lines = 0
        self.t0 = 0.0

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        from tqdm.auto import tqdm

        self.close()
        self.bar = tqdm(total=trainer.steps_this_epoch(), desc=f"epoch {epoch + 1}/{trainer.config.loop.epochs}",
                        unit="step", dynamic_ncols=True, leave=False)
        self.lines, self.t0, self.loss = 0, time.perf_counter(), math.nan

    def on_step_end(self, trainer: Trainer, step: int, loss: float, lines: int) -> None:
        if self.bar is None:
            return
        # An exponential average reads better than the noisy per-batch loss.
        self.loss = loss if math.isnan(self.loss) else 0.95 * self.loss + 0.05 * loss
        self.lines += lines * trainer.world_size
        rate = self.lines / max(1e-9, time.perf_counter() - self.t0)
        self.bar.set_postfix(loss=f"{self.loss:.3f}", lines_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        self.close()
        shown = {k: metrics[k] for k in ("train_loss", "val_cer", "val_wer", "real_val_cer", "real_val_wer",
                                         "lines_per_s") if k in metrics}
        text = ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
        trainer.log(f"epoch {epoch + 1}: {text}")

    def on_train_end(self, trainer: Trainer, metrics: dict[str, Any]) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
