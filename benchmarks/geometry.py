"""Writing geometry of real and synthetic lines: how tall the core is and how far apart the strokes stand.

    python benchmarks/geometry.py --labels ../real-dev/lines.tsv --store ~/.cache/textrec/pools/pool-X.h5

For each line, cropped to its ink as the stem crops it: the core (the x-height band,
:func:`textrec.stem.core_band`) as a fraction of the ink height, and the mean distance between strokes
across the core (:func:`textrec.stem.stroke_spacing`) in core heights. Prints the 10th / 50th / 90th
percentiles of both for the labelled set (a TSV, an IAM lines folder or an s3:// URI) and for a sample
of a line store's lines, the figures behind ``stem.core`` and ``stem.spacing``. Nothing is asserted.
"""

from __future__ import annotations

import argparse

import numpy as np

from textrec.data.store import LineStore
from textrec.evaluate import real_samples
from textrec.stem import core_band, crop_to_ink, ink_mask, stroke_spacing, to_grey


def geometry(image: np.ndarray) -> tuple[float, float] | None:
    """(core / ink height, stroke spacing / core height) of one line; None for a line without ink."""
    grey = crop_to_ink(to_grey(image))
    mask = ink_mask(grey)
    if mask is None:
        return None
    top, bottom = core_band(mask)
    core = bottom - top
    return core / grey.shape[0], stroke_spacing(mask[top:bottom]) / core


def report(name: str, images: list[np.ndarray]) -> None:
    rows = np.array([g for g in map(geometry, images) if g is not None])
    for column, label in enumerate(("core / ink height", "stroke spacing / core")):
        p10, p50, p90 = np.percentile(rows[:, column], [10, 50, 90])
        print(f"{name:<10} {label:<22} {p10:6.3f} {p50:6.3f} {p90:6.3f}   ({len(rows)} lines)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labels", help="TSV of image<TAB>text, an IAM lines folder, or an s3:// URI")
    ap.add_argument("--store", help="a line store (e.g. a training run's synthetic pool)")
    ap.add_argument("--n", type=int, default=400, help="lines sampled from the store")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    if not (a.labels or a.store):
        raise SystemExit("give --labels, --store or both")
    print(f"{'set':<10} {'measure':<22} {'p10':>6} {'p50':>6} {'p90':>6}")
    if a.labels:
        report("labelled", [image for image, _, _ in real_samples(a.labels)])
    if a.store:
        store = LineStore(a.store)
        picks = np.random.default_rng(a.seed).choice(len(store), min(a.n, len(store)), replace=False)
        report("store", [store.image(int(i)) for i in picks])


if __name__ == "__main__":
    main()
