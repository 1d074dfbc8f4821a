"""Throughput of the official-dataset readers on stand-in data of the real formats and sizes.

    python benchmarks/data_readers.py [--emnist-scale 1.0] [--iam-forms 100] [--lines 2000] [--json]

- EMNIST: a ``gzip.zip`` in NIST's layout with as many glyphs as the real ``byclass`` split
  (697,932 + 116,323 at scale 1.0; the pixels are simple shapes, so the archive compresses better
  than the real one), then ``ingest_emnist`` and ``compose_lines``.
- IAM: ``--iam-forms`` forms of 8 lines drawn with PIL in the lines layout, then ``ingest_iam``.

Building the inputs is not timed. Prints seconds, items per second and peak memory (max RSS).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import resource
import sys
import tempfile
import time
import zipfile
from datetime import date
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the official-format builders

from fixtures.emnist_files import BYCLASS, idx_bytes  # noqa: E402
from fixtures.iam_tree import FakeForm, build_iam  # noqa: E402

from textrec.data.emnist import compose_lines, ingest_emnist  # noqa: E402
from textrec.data.iam import ingest_iam  # noqa: E402

BYCLASS_SIZES = {"train": 697_932, "test": 116_323}


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_emnist_zip(path: Path, scale: float, seed: int = 0) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for part, size in BYCLASS_SIZES.items():
            n = max(62, int(size * scale))
            images = np.zeros((n, 28, 28), np.uint8)
            images[:, 6:22, 9:19] = rng.integers(60, 256, (n, 1, 1), dtype=np.uint8)
            labels = rng.integers(0, 62, n).astype(np.uint8)
            zf.writestr(f"gzip/emnist-byclass-{part}-images-idx3-ubyte.gz", gzip.compress(idx_bytes(images), 1))
            zf.writestr(f"gzip/emnist-byclass-{part}-labels-idx1-ubyte.gz", gzip.compress(idx_bytes(labels), 1))
            total += n
        zf.writestr("gzip/emnist-byclass-mapping.txt", "".join(f"{i} {ord(c)}\n" for i, c in enumerate(BYCLASS)))
    return total


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(scale: float, iam_forms: int, n_lines: int) -> dict[str, float | str]:
    with tempfile.TemporaryDirectory(prefix="textrec-bench-") as tmp:
        tmp = Path(tmp)
        glyphs = make_emnist_zip(tmp / "gzip.zip", scale)
        t_ingest = timed(lambda: ingest_emnist(str(tmp / "gzip.zip"), tmp / "chars.h5"))
        t_compose = timed(lambda: compose_lines(tmp / "chars.h5", n_lines, tmp / "lines.h5", progress=False))
        forms = [FakeForm(f"x{k:03d}-{k:03d}", f"{k % 50:03d}",
                          [(f"line {j} of form {k} with some words", True) for j in range(8)])
                 for k in range(iam_forms)]
        build_iam(tmp / "iam", layout="lines", forms=forms)
        t_iam = timed(lambda: ingest_iam(str(tmp / "iam"), tmp / "iam.h5", progress=False))
    return {
        "machine": f"{cpu_model()}, {os.cpu_count()} cores", "date": date.today().isoformat(),
        "emnist_glyphs": glyphs, "emnist_ingest_s": round(t_ingest, 2),
        "emnist_glyphs_per_s": round(glyphs / t_ingest),
        "emnist_lines": n_lines, "emnist_lines_s": round(t_compose, 2),
        "emnist_lines_per_s": round(n_lines / t_compose),
        "iam_lines": 8 * iam_forms, "iam_ingest_s": round(t_iam, 2), "iam_lines_per_s": round(8 * iam_forms / t_iam),
        "max_rss_mb": round(max_rss_mb()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--emnist-scale", type=float, default=1.0, help="fraction of EMNIST byclass's size")
    p.add_argument("--iam-forms", type=int, default=100)
    p.add_argument("--lines", type=int, default=2000, help="EMNIST-lines to compose")
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    result = run(a.emnist_scale, a.iam_forms, a.lines)
    if a.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:22s} {value}")


if __name__ == "__main__":
    main()
