"""Training throughput: lines per second for a pregenerated pool versus rendering on the fly.

    python benchmarks/train.py                      # the cpu recipe's model, 30 steps per setting
    python benchmarks/train.py --workers 0 1 --threads 1 2 --steps 20

For each data mode it builds the real trainer (a small pool is rendered once into a temporary cache),
then times ``--steps`` optimiser steps after ``--warmup`` steps, data loading included; it also times
the data pipeline alone (batches per second with no model) to show which side is the bottleneck.
Prints one row per setting; nothing is asserted.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from textrec.training import load_config
from textrec.training.loop import Trainer

ROOT = Path(__file__).resolve().parents[1]


def time_steps(trainer: Trainer, steps: int, warmup: int, train: bool) -> float:
    """Lines per second over ``steps`` batches (after ``warmup``), training or only loading."""
    trainer.sampler.set_epoch(0)
    trainer.model.train()
    batches = iter(trainer.loader)
    lines, t0 = 0, 0.0
    for i in range(warmup + steps):
        batch = next(batches)
        if train:
            trainer.train_step(batch)
        if i == warmup - 1:
            t0 = time.perf_counter()
        elif i >= warmup:
            lines += len(batch)
    return lines / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    ap.add_argument("--modes", nargs="+", default=["pool", "online"])
    ap.add_argument("--workers", type=int, nargs="+", default=[1])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="extra config overrides, e.g. model.options.lstm_hidden=128")
    a = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"config {a.config.name}, load average {os.getloadavg()[0]:.1f}")
    print("mode    workers threads  data-only lines/s  train lines/s")
    with tempfile.TemporaryDirectory(prefix="textrec-bench-") as tmp:
        for mode, workers, threads in itertools.product(a.modes, a.workers, a.threads):
            n = (a.steps + a.warmup) * 64
            cfg = load_config(a.config, [f"--data.mode={mode}", f"--data.train_lines={n}", "--data.val_lines=16",
                                         "--data.test_lines=16", "--data.unseen_font_lines=16",
                                         f"--data.num_workers={workers}", f"--loop.threads={threads}",
                                         f"--data.cache_dir={tmp}/cache", "--loop.progress=false", "--loop.epochs=1",
                                         *a.overrides])
            trainer = Trainer(cfg, Path(tmp) / f"{mode}-{workers}-{threads}")
            data_rate = time_steps(trainer, a.steps, a.warmup, train=False)
            train_rate = time_steps(trainer, a.steps, a.warmup, train=True)
            print(f"{mode:7s} {workers:7d} {threads:7d}  {data_rate:17.1f}  {train_rate:13.1f}", flush=True)
            trainer.close()


if __name__ == "__main__":
    main()
