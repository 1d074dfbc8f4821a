"""Inference throughput on CPU: lines per second through the Recognizer, one line at a time and batched.

    python benchmarks/infer.py                         # an untrained model of the cpu recipe's size
    python benchmarks/infer.py --model runs/cpu/model.pt --batch-sizes 1 8 32 --threads 1 2

Lines are rendered by the synthetic renderer (so widths are realistic), then read through
``Recognizer.recognise`` (stem, width-sorted batching, model, decoder): with greedy decoding and, when
the artifact chose it, with its beam search + character LM. The stem alone is timed too.
Prints one row per setting; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from textrec.decoding import DecoderSpec
from textrec.recognizer import Recognizer

ROOT = Path(__file__).resolve().parents[1]


def untrained_model(config: Path, folder: Path) -> Path:
    """A model.pt of the recipe's architecture with random weights (speed does not depend on them)."""
    from textrec.artifact import save_artifact
    from textrec.charset import DEFAULT_CHARSET
    from textrec.models import create_model
    from textrec.stem import LineStem
    from textrec.training import load_config

    cfg = load_config(config)
    model = create_model(cfg.model.name, num_classes=DEFAULT_CHARSET.num_classes, height=cfg.stem.height,
                         **cfg.model.options)
    return save_artifact(folder / "model.pt", model, charset=DEFAULT_CHARSET, stem=LineStem(cfg.stem))


def render_lines(n: int, seed: int = 0) -> list[np.ndarray]:
    from textrec.data.synth import LineRenderer
    from textrec.data.text import WordFreqSource

    renderer, source = LineRenderer(), WordFreqSource()
    rng = np.random.default_rng(seed)
    return [renderer.render(source.sample(rng), rng)[0] for _ in range(n)]


def rate(fn, n: int, repeat: int = 2) -> float:
    fn()  # warm up (allocator, thread pool)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return n / best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="model.pt (default: untrained, --config's size)")
    ap.add_argument("--config", type=Path, default=ROOT / "configs" / "cpu.yaml")
    ap.add_argument("--lines", type=int, default=64)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="textrec-bench-") as tmp:
        path = a.model or untrained_model(a.config, Path(tmp))
        rec = Recognizer.load(path)
        images = render_lines(a.lines)
        mean_w = np.mean([rec.preprocess(im).shape[-1] for im in images])
        print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
              f"model {rec.info['model_name']} ({sum(p.numel() for p in rec.model.parameters()) / 1e6:.2f} M), "
              f"{a.lines} lines, mean input width {mean_w:.0f} px at height {rec.stem.config.height}, "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"stem only: {rate(lambda: [rec.preprocess(im) for im in images], len(images)):.0f} lines/s")
        decoders = [DecoderSpec()]
        if rec.decoder.kind != "greedy":
            decoders.append(rec.decoder)
        print("decoder  threads batch  lines/s  ms/line")
        for decoder in decoders:
            rec.decoder = decoder
            name = decoder.label()
            for threads in a.threads:
                torch.set_num_threads(threads)
                for bs in a.batch_sizes:
                    r = rate(lambda bs=bs: rec.recognise(images, batch_size=bs), len(images))
                    print(f"{name:16s} {threads:7d} {bs:5d} {r:8.1f} {1000 / r:8.1f}", flush=True)


if __name__ == "__main__":
    main()
