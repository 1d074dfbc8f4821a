"""Page -> text lines: the classical segmenter in front of the line recognizer.

A page (or paragraph) image becomes line crops in reading order, top to bottom, each with its box in
the page's own pixel coordinates. The steps, on the ink mask that the stem's :func:`textrec.stem.ink_mask`
decides (the one "what is ink" rule, specks dropped):

1. **Scale.** Connected components of ink give the writing's size: ``size`` is the median height of
   the components that are neither specks nor joined-up lines (an x-height-to-ascender measure).
2. **Deskew.** The page angle maximises the sharpness (sum of squared differences) of the horizontal
   ink projection over ±``max_skew`` degrees; the page is rotated upright before anything else.
3. **Bands.** The upright projection profile, smoothed at ``0.4 * size``, has one peak per line;
   peaks closer than ``0.9 * size`` merge, and each pair of neighbours is cut at the lowest point of
   the profile between them.
4. **Assignment.** Each component goes to the band holding most of its ink, so dots, commas and
   descenders follow their line; a component whose ink is split over two bands by more than a
   quarter each (a descender joined to the ascender below) is cut along the band boundary instead.
5. **Crops.** A line's crop is the bounding box of its ink, with every other line's ink set to paper:
   the line model sees its own line alone. Bands with almost no ink (a stray mark) are dropped.

Boxes are mapped back from the upright page to the input's coordinates (the bounding box of the
rotated rectangle), right and bottom exclusive. Multi-column layouts are out of scope: a page is read
as one column.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from textrec.stem import ink_mask

Box = tuple[int, int, int, int]  # x0, y0, x1, y1; right and bottom exclusive


@dataclass(frozen=True)
class SegmentConfig:
    """Settings of the page segmenter (defaults chosen on synthetic pages; see docs/benchmarks.md)."""

    max_skew: float = 5.0  # degrees searched either way
    skew_step: float = 0.2  # degrees
    smooth: float = 0.4  # profile smoothing, as a fraction of the writing size
    min_gap: float = 0.9  # peaks closer than this many writing sizes are one line
    split_share: float = 0.25  # a component with more than this share of its ink in a second band is cut
    min_ink: float = 0.04  # bands with less ink than this fraction of the median band are dropped

    def __post_init__(self) -> None:
        if not 0 <= self.max_skew <= 45:
            raise ValueError(f"SegmentConfig.max_skew must be in [0, 45] degrees, got {self.max_skew}")
        if self.skew_step <= 0:
            raise ValueError(f"SegmentConfig.skew_step must be > 0, got {self.skew_step}")
        for name in ("smooth", "min_gap"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SegmentConfig.{name} must be > 0, got {getattr(self, name)}")
        for name in ("split_share", "min_ink"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"SegmentConfig.{name} must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True)
class LineCrop:
    """One segmented line: its box on the input page and its own pixels (other lines' ink removed)."""

    box: Box
    image: np.ndarray  # (h, w) uint8, ink dark


@dataclass(frozen=True)
class Segmentation:
    lines: list[LineCrop]
    skew: float  # degrees the page was rotated by to stand upright
    size: float  # writing size in pixels (median component height)


def segment_page(grey: np.ndarray, config: SegmentConfig = SegmentConfig()) -> Segmentation:  # noqa: B008
    """(H, W) uint8 ink-dark page -> its lines, top to bottom. A page with no ink has no lines."""
    if grey.ndim != 2 or grey.dtype != np.uint8:
        raise ValueError(f"page: expected (H, W) uint8 grey pixels, got {grey.dtype} {grey.shape}")
    mask = ink_mask(grey)
    if mask is None or not mask.any():
        return Segmentation([], 0.0, 0.0)
    labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    size = writing_size(labels, n)
    angle = estimate_skew(mask, config.max_skew, config.skew_step)
    paper = int(np.median(grey[~mask]))
    upright, up_labels = grey, labels
    if angle != 0.0:
        upright = _rotate(grey, angle, paper, Image.Resampling.BILINEAR)
        up_labels = _rotate(labels.astype(np.int32), angle, 0, Image.Resampling.NEAREST)
    up_mask = up_labels > 0
    ys = np.nonzero(up_mask)[0]
    profile = np.bincount(ys, minlength=up_mask.shape[0]).astype(np.float64)
    cuts = band_cuts(profile, size, config)
    band_of_row = np.searchsorted(np.asarray(cuts), np.arange(up_mask.shape[0]), side="right")
    owner = _assign(up_labels, n, band_of_row, len(cuts) + 1, config.split_share)
    crops = _crops(upright, up_mask, owner, paper, config.min_ink)
    h, w = grey.shape
    lines = [LineCrop(_unrotate_box(box, angle, upright.shape, (h, w)), image) for box, image in crops]
    return Segmentation(lines, angle, size)


def writing_size(labels: np.ndarray, n: int) -> float:
    """Median height of the ink components that are not specks (under 3 px) nor whole lines."""
    if n == 0:
        return 0.0
    slices = ndimage.find_objects(labels)
    heights = np.array([s[0].stop - s[0].start for s in slices if s is not None], np.float64)
    widths = np.array([s[1].stop - s[1].start for s in slices if s is not None], np.float64)
    keep = (heights >= 3) & (widths < 0.5 * labels.shape[1])
    chosen = heights[keep] if keep.any() else heights
    return float(np.median(chosen))


def estimate_skew(mask: np.ndarray, max_skew: float = 5.0, step: float = 0.2) -> float:
    """Degrees to rotate the page counter-clockwise by (PIL's ``rotate``) so its lines run level:
    the angle whose horizontal ink projection is sharpest. Lines that fall to the right give a
    positive angle.

    >>> m = np.zeros((200, 400), bool)
    >>> for y0 in (40, 90, 140):  # three level bars
    ...     m[y0:y0 + 12, 20:380] = True
    >>> estimate_skew(m)
    0.0
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0 or max_skew == 0:
        return 0.0
    if ys.size > 400_000:  # a subsample decides the angle as well and keeps big pages fast
        pick = np.random.default_rng(0).choice(ys.size, 400_000, replace=False)
        ys, xs = ys[pick], xs[pick]
    dy, dx = ys - mask.shape[0] // 2, xs - mask.shape[1] // 2  # whole pixels: a half would merge rows
    steps = int(round(max_skew / step))
    best, best_score = 0.0, -1.0
    for k in sorted(range(-steps, steps + 1), key=abs):  # ties go to the smaller angle
        a = math.radians(k * step)
        # row of each pixel after rotating the image counter-clockwise by a (PIL's rotate(+a))
        rows = np.rint(dy * math.cos(a) - dx * math.sin(a)).astype(np.int64)
        hist = np.bincount(rows - rows.min() + 1).astype(np.float64)
        score = float(np.sum(np.diff(hist, append=0.0) ** 2))  # from and back to no ink at both ends
        if score > best_score * (1 + 1e-9):
            best, best_score = k * step, score
    return round(best, 4)


def band_cuts(profile: np.ndarray, size: float, config: SegmentConfig = SegmentConfig()) -> list[int]:  # noqa: B008
    """Rows between lines: the lowest point of the smoothed profile between neighbouring peaks.

    >>> p = np.zeros(120); p[10:30] = 50; p[60:80] = 40; p[95:110] = 30
    >>> band_cuts(p, 15.0)
    [45, 88]
    """
    if size <= 0 or not profile.any():
        return []
    smooth = ndimage.gaussian_filter1d(profile, max(1.0, config.smooth * size), mode="constant")
    interior = (smooth[1:-1] > smooth[:-2]) & (smooth[1:-1] >= smooth[2:])
    peaks = [int(p) for p in np.flatnonzero(interior) + 1]
    if smooth.size and smooth[0] > smooth[1:2].max(initial=0):
        peaks.insert(0, 0)
    floor = 0.05 * smooth.max()
    peaks = [p for p in peaks if smooth[p] > floor]
    merged: list[int] = []
    for p in peaks:  # of two peaks too close together, keep the higher
        if merged and p - merged[-1] < config.min_gap * size:
            if smooth[p] > smooth[merged[-1]]:
                merged[-1] = p
            continue
        merged.append(p)
    cuts = []
    for a, b in zip(merged, merged[1:], strict=False):
        segment = smooth[a:b + 1]
        low = np.flatnonzero(segment <= segment.min() + 1e-9)
        cuts.append(int(a + (low[0] + low[-1]) // 2))  # the middle of a flat valley
    return cuts


def _assign(labels: np.ndarray, n: int, band_of_row: np.ndarray, bands: int, split_share: float) -> np.ndarray:
    """Band index (1-based; 0 for paper) of every pixel: whole components, or cut where shared."""
    ys, xs = np.nonzero(labels)
    lab = labels[ys, xs]
    band = band_of_row[ys]
    counts = np.zeros((n + 1, bands), np.int64)
    np.add.at(counts, (lab, band), 1)
    total = counts.sum(axis=1)
    main = counts.argmax(axis=1)
    second = np.sort(counts, axis=1)[:, -2] if bands > 1 else np.zeros(n + 1, np.int64)
    shared = second > split_share * np.maximum(total, 1)
    owner = np.zeros(labels.shape, np.int32)
    owner[ys, xs] = np.where(shared[lab], band, main[lab]) + 1
    return owner


def _crops(upright: np.ndarray, mask: np.ndarray, owner: np.ndarray, paper: int,
           min_ink: float) -> list[tuple[Box, np.ndarray]]:
    ink = np.bincount(owner[mask], minlength=int(owner.max()) + 1)[1:]
    present = ink[ink > 0]
    if present.size == 0:
        return []
    floor = min_ink * float(np.median(present))
    out = []
    objects = ndimage.find_objects(owner)
    for i, sl in enumerate(objects):
        if sl is None or ink[i] <= floor:
            continue
        crop = upright[sl].copy()
        own = owner[sl]
        crop[mask[sl] & (own != i + 1)] = paper  # the neighbours' ink becomes paper
        box = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        out.append((box, crop))
    out.sort(key=lambda bc: bc[0][1] + bc[0][3])
    return out


def _rotate(a: np.ndarray, angle: float, fill: int, resample: Image.Resampling) -> np.ndarray:
    """Rotate counter-clockwise by ``angle`` degrees about the centre, keeping the size."""
    mode = "I" if a.dtype == np.int32 else "L"
    img = Image.fromarray(a, mode=mode)
    return np.asarray(img.rotate(angle, resample=resample, expand=False, fillcolor=fill)).astype(a.dtype)


def _unrotate_box(box: Box, angle: float, shape: tuple[int, ...], page: tuple[int, int]) -> Box:
    """A box on the upright page -> the bounding box of that rectangle on the input page."""
    if angle == 0.0:
        return box
    x0, y0, x1, y1 = box
    cy, cx = (shape[0]) / 2, (shape[1]) / 2
    a = math.radians(angle)
    # PIL's rotate(+a) (counter-clockwise on screen, y down) moves p - c to (x c + y s, -x s + y c);
    # the inverse takes an upright point back to the page.
    corners = np.array([[x0, y0], [x1, y0], [x0, y1], [x1, y1]], np.float64) - (cx, cy)
    c, s = math.cos(a), math.sin(a)
    xs = corners[:, 0] * c - corners[:, 1] * s + cx
    ys = corners[:, 0] * s + corners[:, 1] * c + cy
    h, w = page
    return (max(0, math.floor(xs.min())), max(0, math.floor(ys.min())),
            min(w, math.ceil(xs.max())), min(h, math.ceil(ys.max())))
