"""Line stem throughput: lines per CPU-second with and without training augmentation.

    python benchmarks/stem.py [--lines 400] [--seed 0]

Renders synthetic lines once (not timed), then runs the stem over all of them in this one process,
clean and augmented. CPU time is reported next to wall time because the stem runs in DataLoader
workers on shared cores: lines per CPU-second is what carries over between machines. It also prints
the CTC frames per character of ``line_cnn_lstm`` on these lines (width / 4 over text length), which
must stay above 2 for CTC to have room for every character and the blanks between repeats.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np

from textrec.data.store import open_store
from textrec.data.synth import synthesize
from textrec.stem import LineStem


def run(stem: LineStem, images: list[np.ndarray], augment: bool, seed: int) -> tuple[float, float, list]:
    rng = np.random.default_rng(seed)
    wall, cpu = time.perf_counter(), time.process_time()
    out = [stem(img, rng, augment=augment) for img in images]
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(synthesize(a.lines, Path(tmp) / "lines.h5", seed=a.seed, workers=1, progress=False))
        images = [store.image(i) for i in range(len(store))]
        texts = [store.text(i) for i in range(len(store))]
    stem = LineStem()
    mean_h = np.mean([img.shape[0] for img in images])
    mean_w = np.mean([img.shape[1] for img in images])
    print(f"{platform.processor() or platform.machine()}, {date.today()}, {len(images)} synthetic lines "
          f"of ~{mean_h:.0f} x {mean_w:.0f} px, stem {stem.config.height} px high")
    print("| augment | lines | wall | CPU | lines per CPU-second |")
    print("| --- | --- | --- | --- | --- |")
    for augment in (False, True):
        wall, cpu, out = run(stem, images, augment, a.seed)
        print(f"| {augment} | {len(images)} | {wall:.2f} s | {cpu:.2f} s | {len(images) / cpu:.0f} |")
        if not augment:
            ratio = np.array([x.shape[-1] / 4 / max(1, len(t)) for x, t in zip(out, texts, strict=True)])
    print(f"frames per character (clean, /4): min {ratio.min():.2f}, 5th percentile "
          f"{np.percentile(ratio, 5):.2f}, median {np.median(ratio):.2f}")


if __name__ == "__main__":
    main()
