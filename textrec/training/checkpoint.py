"""Checkpoints that resume a run exactly: weights, optimiser, schedule, scaler, position, RNG states.

A checkpoint is a torch-saved dict of tensors and plain Python values, so it loads with
``torch.load(..., weights_only=True)``. It is written to a temporary file in the same folder and
renamed into place, so a node preempted mid-write leaves the previous checkpoint intact.

The data order needs no saved state: the sampler's order is a pure function of (seed, epoch), and
each line's augmentation of (seed, epoch, index), so resuming at (epoch, step_in_epoch) replays
the same batches. What does need saving is every generator that the loop itself draws from
(dropout, say): Python's, NumPy's and torch's (CPU and CUDA), on every rank.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from textrec.io import atomic_open
from textrec.rundir import RunDir

CHECKPOINT_FORMAT = "textrec-checkpoint"
CHECKPOINT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable or from an incompatible run; the message names the file."""


def rng_state() -> dict[str, Any]:
    """This process's generator states, as tensors and plain values."""
    py = random.getstate()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _numpy_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {"kind": kind, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically (temp file in the same folder, fsync, rename)."""
    with atomic_open(path, "wb") as f:
        torch.save({"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **state}, f)
    return Path(path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({e})") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a textrec checkpoint")
    if state.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {state.get('version')}, "
                              f"expected {CHECKPOINT_VERSION}")
    return state


def resolve_resume(resume: str | os.PathLike | None, out_dir: Path) -> Path | None:
    """``None``/``""`` -> no resume; ``"auto"`` -> ``OUT/checkpoints/last.pt`` if it exists; else a path."""
    if not resume:
        return None
    if str(resume) == "auto":
        last = RunDir(out_dir).last
        return last if last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint to resume from")
    return path
