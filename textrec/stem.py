"""The one preprocessing: a line image -> a normalised tensor, for training, evaluation and serving.

Every path that feeds a model goes through :class:`LineStem`, so what the model saw in training is what
it sees in production (train/serve skew is a bug). The steps, all on uint8 pixels with numpy and PIL so
they stay cheap inside DataLoader workers:

1. **Grey.** Any PIL grey or colour mode or array layout becomes (H, W) uint8 with dark ink on light
   paper (:func:`to_grey`, also what decoding image files for prediction and serving calls).
2. **Crop to ink**, then, when ``deslant`` is set, **upright** (:func:`deslant`). A percentile threshold from the histogram (:func:`ink_threshold`) splits ink
   from paper; ink pixels with fewer than three ink pixels in their 3x3 neighbourhood are dropped as
   specks; the crop keeps every ink column and trims the outermost 0.1 % of ink rows, so a few
   stray pixels that survive the speck filter do not decide the scale. Tight crops transfer better
   to real handwriting than padded ones.
3. **Height.** The crop is resized (antialiased) to ``height`` rows, keeping the aspect ratio; the width
   is clamped to ``[8, max_width]`` (a line wider than ``max_width`` is squeezed horizontally). With
   ``core`` set the line is scaled by its core instead (the x-height band, :func:`zone_layout`): the
   core fills a fixed share of the rows and ascenders and descenders are squeezed into the rest, and
   with ``spacing`` the width is scaled so the strokes stand a fixed number of core heights apart.
   Writers with long ascenders or wide letters then look like fonts with short ones and narrow letters.
4. **Contrast.** Per line, paper is the median of the paper pixels and ink the 30th percentile of
   the ink pixels; pixels map linearly to ink ~1, paper ~0 and are clipped. Faint pencil and bold marker
   therefore look alike, and zero padding in a batch is paper.
5. **Stroke width** (when ``stroke`` is set): steps 3-4 run at twice the height, every stroke is widened
   or narrowed until the line's mean stroke width (:func:`stroke_width`) is ``stroke`` output pixels,
   and the line is shrunk to ``height``. Fonts and real pens then look alike to the model.

**No ink.** A line without ink (:func:`has_ink` is false: white, black, transparent or uniform grey,
paper texture or sensor noise with no strokes in it) comes out as all zeros, blank paper, at the size
step 3 gives the whole image. This is the one place that decides "no ink"; :func:`is_blank` reads the
decision back from the tensor, and the Recognizer answers such a line with empty text at confidence 0
without asking the model (which would read letters into nothing).

``augment=True`` (training only) first distorts the cropped line at 1.5x the target height: one affine
warp for slant, rotation and horizontal stretch, then stroke thickness (min/max filters, thinning as
often as thickening because models break on strokes thinner than they trained on), a low-resolution
pass, blur, contrast and noise. The normal steps 2-5 follow, so augmented and clean lines share one
normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

MIN_WIDTH = 8
_MIN_CONTRAST = 24  # grey levels between paper and the darkest ink below which a line counts as blank
_MIN_SPAN = 8  # smallest ink-to-paper span that is stretched to [0, 1] (faint thin strokes after shrinking)
_ROW_TRIM = 0.001  # fraction of ink mass trimmed from the top and the bottom when cropping
_INK_PERCENTILE = 0.30  # ink level: this quantile of the ink class (darker pixels saturate at 1)
_MIN_STROKE_FRACTION = 0.5  # of the dark pixels that must lie on strokes: noise is mostly isolated specks


@dataclass(frozen=True)
class StemConfig:
    """Preprocessing settings; stored in the model artifact so serving repeats them exactly.

    The augmentation strengths act only when the stem is called with ``augment=True``.
    """

    height: int = 40  # model input height in pixels
    crop_to_ink: bool = True
    max_width: int = 2048
    # Shear each line upright before scaling (training and inference alike): real cursive leans
    # 20-40 degrees, synthetic lines mostly stand upright. 0 turns it off; otherwise the largest
    # |shear| searched, as tan(angle).
    deslant: float = 0.0
    # Bring every line's pen to one stroke width, in output pixels (training and inference alike):
    # font outlines are drawn with broader pens than real ballpoints, and a model trained on one width
    # misreads the other. 0 turns it off. See :func:`set_stroke_width`.
    stroke: float = 0.0
    # Scale each line by its core (the x-height band, where the letters without ascenders or descenders
    # live) instead of its whole ink height: the core fills this fraction of the rows, centred, and
    # ascenders, descenders or a neighbour line's strokes that would overflow are squeezed into the rows
    # left. Real writers' ascenders and descenders are longer than fonts', so by ink height their letters
    # come out smaller. 0 turns it off. See :func:`zone_layout`.
    core: float = 0.0
    # With ``core``: scale each line horizontally too, so its strokes stand this many core heights apart
    # (the mean distance between strokes across the core). Real hands spread wider than fonts do, from
    # tightly joined cursive (~0.55) to wide print (~1.6; fonts 0.65-1.27). 0 keeps the aspect ratio.
    # See :func:`zone_layout`.
    spacing: float = 0.0
    # With ``core``: a line never comes out narrower than this fraction of its width by plain scaling.
    # Where the core or the spacing is misread (blurred bold faces, print full of ascenders) a line was
    # squeezed to a third of that, fewer frames than it has characters; real lines measured came out at
    # 0.75 of it or wider. 0 sets no floor. See :func:`zone_fit`.
    narrowest: float = 0.0
    # --- augmentation (training only) ---
    slant: float = 0.45  # max |shear| as tan(angle): handwriting slants up to ~25 degrees either way
    rotation: float = 1.0  # max |rotation| in degrees (a tight crop of a long tilted line shrinks it)
    stretch: float = 0.25  # horizontal scale is log-uniform in [1/(1+s), 1+s]
    thickness: float = 0.7  # probability of changing the stroke width (half thinner, half thicker)
    low_res: float = 0.3  # probability of a down/up-sampling pass to 40-90 % of the target height
    blur: float = 0.3  # probability of a Gaussian blur
    noise: float = 0.1  # max std of additive Gaussian noise, as a fraction of the ink/paper range
    contrast: float = 0.6  # max loss of ink/paper contrast (0: none, 1: could vanish)

    def __post_init__(self) -> None:
        if not 8 <= self.height <= 512:
            raise ValueError(f"StemConfig.height must be in [8, 512], got {self.height}")
        if self.max_width < MIN_WIDTH:
            raise ValueError(f"StemConfig.max_width must be >= {MIN_WIDTH}, got {self.max_width}")
        for name in ("thickness", "low_res", "blur", "contrast"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"StemConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.stroke != 0 and not 0.5 <= self.stroke <= 0.25 * self.height:
            raise ValueError(f"StemConfig.stroke must be 0 (off) or in [0.5, height / 4], got {self.stroke}")
        if self.core != 0 and not 0.2 <= self.core <= 0.8:
            raise ValueError(f"StemConfig.core must be 0 (off) or in [0.2, 0.8], got {self.core}")
        if self.spacing != 0 and not (self.core > 0 and 0.3 <= self.spacing <= 3.0):
            raise ValueError(f"StemConfig.spacing must be 0 (off) or in [0.3, 3] with core set, got spacing "
                             f"{self.spacing} and core {self.core}")
        if self.narrowest != 0 and not (self.core > 0 and 0.0 < self.narrowest <= 1.0):
            raise ValueError(f"StemConfig.narrowest must be 0 (off) or in (0, 1] with core set, got "
                             f"narrowest {self.narrowest} and core {self.core}")
        if not 0.0 <= self.deslant <= 1.5:
            raise ValueError(f"StemConfig.deslant must be in [0, 1.5] (max |shear|), got {self.deslant}")
        for name in ("slant", "rotation", "stretch", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"StemConfig.{name} must be >= 0, got {getattr(self, name)}")


class LineStem:
    """Image -> float32 tensor (1, height, W') with ink ~1 and paper ~0.

    >>> img = np.full((60, 200), 255, np.uint8)  # white paper with two black bars and a gap
    >>> img[20:40, 30:60] = img[20:40, 100:150] = 0
    >>> x = LineStem()(img)  # cropped to 20 x 120 px, then scaled to 40 rows
    >>> tuple(x.shape), x.dtype, float(x[0, :, 2:58].min()), float(x[0, :, 62:138].max())
    ((1, 40, 240), torch.float32, 1.0, 0.0)
    """

    def __init__(self, config: StemConfig = StemConfig()) -> None:  # noqa: B008 (frozen, shared default)
        self.config = config

    def __repr__(self) -> str:
        return f"LineStem({self.config})"

    def __call__(self, image: np.ndarray | Image.Image, rng: np.random.Generator | None = None,
                 augment: bool = False) -> torch.Tensor:
        grey = to_grey(image)
        if not augment:
            return torch.from_numpy(self.normalise(grey))[None]
        rng = rng if rng is not None else np.random.default_rng()
        x = self.normalise(distort(grey, self.config, rng))
        return torch.from_numpy(add_noise(x, self.config.noise, rng))[None]

    def normalise(self, grey: np.ndarray) -> np.ndarray:
        """(H, W) uint8 ink-dark -> (height, W') float32 ink-bright; steps 2-5 of the module docstring
        (all zeros for a line with no ink)."""
        cfg = self.config
        grey, inked, width = self._crop(grey)
        if not inked:
            return np.zeros((cfg.height, width), np.float32)
        if cfg.stroke > 0:  # the work happens at twice the size, see _with_stroke
            return _with_stroke(self._fit(grey, 2 * cfg.height, 2 * width), cfg)
        return ink_contrast(self._fit(grey, cfg.height, width))

    def output_width(self, image: np.ndarray | Image.Image) -> int:
        """The width of ``self(image)`` (no augmentation), from the line's geometry alone: about a third
        of the work of normalising it. Training sorts lines into batches by it, so that a batch holds
        lines of one width and little padding, which plain scaling's width does not predict once the
        core and the stroke spacing decide the scale."""
        cfg = self.config
        grey, inked, width = self._crop(to_grey(image))
        if not inked or cfg.core <= 0:
            return width
        factor = 2 if cfg.stroke > 0 else 1  # _fit's size, see normalise
        fit = zone_fit(grey, factor * cfg.height, **self._zones(factor * cfg.height))
        return max(MIN_WIDTH, (fit.width + 1) // 2) if factor == 2 else fit.width

    def _crop(self, grey: np.ndarray) -> tuple[np.ndarray, bool, int]:
        """Step 2, and step 3's width by plain scaling: (the line cropped to its ink and deslanted when
        so configured, whether it has ink, its width at ``height`` rows keeping the aspect ratio)."""
        cfg = self.config
        box = ink_box(grey)
        if box is not None and cfg.crop_to_ink:
            grey = grey[box[0]:box[1], box[2]:box[3]]
        if box is not None and cfg.deslant > 0:
            grey = deslant(grey, cfg.deslant)
        h, w = grey.shape
        return grey, box is not None, min(cfg.max_width, max(MIN_WIDTH, round(w * cfg.height / h)))

    def _fit(self, grey: np.ndarray, height: int, width: int) -> np.ndarray:
        """Step 3: the cropped line at ``height`` rows, scaled by its ink height to ``width`` columns, or
        by its core when ``core`` is set (then the width follows the core's scale)."""
        if self.config.core > 0:
            return zone_layout(grey, height, **self._zones(height))
        if grey.shape != (height, width):
            grey = np.asarray(Image.fromarray(grey).resize((width, height), Image.Resampling.BILINEAR))
        return grey

    def _zones(self, height: int) -> dict[str, Any]:
        """The settings :func:`zone_layout` and :func:`zone_fit` take for a line laid out on ``height``
        rows (``max_width`` scaled with it)."""
        cfg = self.config
        return {"core": cfg.core, "spacing": cfg.spacing, "narrowest": cfg.narrowest,
                "max_width": cfg.max_width * height // cfg.height}

    def to_dict(self) -> dict[str, Any]:
        """Plain settings for the model artifact."""
        return asdict(self.config)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LineStem:
        """Rebuild a stem from :meth:`to_dict`; unknown keys are an error (an artifact from elsewhere)."""
        known = {f.name for f in fields(StemConfig)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"stem settings have unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(StemConfig(**data))


# ---------------------------------------------------------------------------------------------------
# Step 1: any image -> (H, W) uint8 grey, dark ink on light paper


# PIL modes by how they become grey. "F" (32-bit float, as float TIFFs decode) is in neither: its
# pixels have no agreed scale (0-1? 0-255? calibrated units?), so it is refused rather than guessed.
_GREY_AND_COLOUR_MODES = frozenset({"1", "L", "P", "RGB", "RGBX", "RGBA", "LA", "PA", "RGBa", "La", "CMYK",
                                    "YCbCr", "LAB", "HSV"})
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_INTEGER_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})  # wide integer grey, scaled to 8 bits


def to_grey(image: np.ndarray | Image.Image, name: str = "line image") -> np.ndarray:
    """Convert a PIL image or array to (H, W) uint8, dark ink on light paper: the one grey conversion
    (the stem calls it, and so does decoding uploaded or on-disk image files). Errors start with ``name``.

    PIL images: grey and colour modes convert as PIL's "L" does, with transparent pixels composited
    onto white paper; 16-bit grey ("I;16*") is scaled by 1/257, 32-bit integer grey ("I") too when a
    pixel is above 255 (else it is read as 8-bit). Mode "F" is refused: a float image file has no
    agreed grey scale. Arrays, which the caller builds and so knows the scale of: uint8 as is,
    bool as PIL's mode "1" (True is white), 16-bit unsigned /257, other integers as mode "I", floats
    in [0, 1] when none is above 1 and in [0, 255] otherwise.

    >>> to_grey(np.array([[0, 65535]], np.uint16)).tolist(), to_grey(np.array([[0.0, 0.5, 1.0]])).tolist()
    ([[0, 255]], [[0, 128, 255]])
    >>> to_grey(np.zeros((2, 2, 5)))
    Traceback (most recent call last):
    ...
    ValueError: line image: expected (H, W) grey or (H, W, 1|3|4) colour pixels, got shape (2, 2, 5)
    >>> to_grey(Image.new("F", (4, 2)), "scan.tif")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: scan.tif: unsupported image mode 'F' (32-bit float pixels have no agreed grey scale); ...
    """
    if isinstance(image, Image.Image):
        grey = _pil_to_grey(image, name)
    elif isinstance(image, np.ndarray):
        grey = _array_to_grey(image, name)
    else:
        raise TypeError(f"{name}: expected a numpy array or PIL image, got {type(image).__name__}")
    if grey.size == 0:
        raise ValueError(f"{name} is empty: shape {grey.shape}")
    return np.ascontiguousarray(grey)


def _pil_to_grey(img: Image.Image, name: str) -> np.ndarray:
    mode = img.mode
    if mode == "L":
        return np.asarray(img)
    if mode in _INTEGER_MODES:
        return _to_uint8(np.asarray(img), name)
    if mode == "F":
        raise ValueError(f"{name}: unsupported image mode 'F' (32-bit float pixels have no agreed grey "
                         "scale); expected grey, colour or 8/16-bit integer pixels. If you know the scale, "
                         "pass the pixels as a float array in [0, 1]")
    if mode not in _GREY_AND_COLOUR_MODES:
        raise ValueError(f"{name}: unsupported image mode {mode!r}; expected grey, colour or 8/16-bit "
                         "integer pixels")
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")  # transparent pixels are paper: composite onto white, then drop alpha
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(paper, rgba)
    try:
        return np.asarray(img.convert("L"))
    except (ValueError, OSError) as e:
        raise ValueError(f"{name}: cannot convert image mode {mode!r} to grey: {e}") from e


def _array_to_grey(a: np.ndarray, name: str) -> np.ndarray:
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        if a.shape[2] == 1:
            a = a[:, :, 0]
        else:
            a = _to_uint8(a, name)
            mode = "RGB" if a.shape[2] == 3 else "RGBA"
            return _pil_to_grey(Image.fromarray(a, mode), name)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected (H, W) grey or (H, W, 1|3|4) colour pixels, got shape {a.shape}")
    return _to_uint8(a, name)


def _to_uint8(a: np.ndarray, name: str) -> np.ndarray:
    """Scale by dtype: bool like PIL mode "1" (True = white), 16-bit /257, floats in [0, 1] or [0, 255]."""
    if a.dtype == np.uint8:
        return a
    if a.dtype == np.bool_:
        return a.astype(np.uint8) * 255
    if a.dtype.kind == "u" and a.dtype.itemsize == 2:  # either byte order (PIL's "I;16B" is big-endian)
        return ((a.astype(np.uint32) + 128) // 257).astype(np.uint8)
    if np.issubdtype(a.dtype, np.integer):
        top = 65535.0 if a.size and a.max() > 255 else 255.0
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and not np.isfinite(a).all():
            raise ValueError(f"{name} has NaN or infinite pixels")
        top = 1.0 if a.size == 0 or a.max() <= 1.0 else 255.0
        return np.clip(np.rint(a * (255.0 / top)), 0, 255).astype(np.uint8)
    raise ValueError(f"{name}: unsupported pixel dtype {a.dtype}")


# ---------------------------------------------------------------------------------------------------
# Steps 2 and 4: ink/paper statistics from the 256-bin histogram


def _quantile(hist: np.ndarray, q: float) -> int:
    """The grey level below which a fraction ``q`` of the histogram's pixels lie."""
    c = np.cumsum(hist)
    return int(np.searchsorted(c, q * c[-1], side="left"))


def ink_threshold(hist: np.ndarray) -> int | None:
    """Grey level at or below which a pixel is ink, from a 256-bin histogram; None for a blank image.

    Percentiles rather than Otsu: a line of thin strokes on textured paper is only a few percent ink,
    and Otsu then splits the paper texture instead. Paper is the 75th percentile (lines are mostly
    paper, even tightly cropped bold ones), its noise the spread from there to the 95th, and ink the
    darkest 0.1 %. Ink needs to stand out from the paper by ``_MIN_CONTRAST`` levels and by 4 noise
    spreads; the threshold lies 60 % of the way from paper to ink (paper texture reaches further
    below the paper than its upper spread suggests), and at least 2 spreads below the paper.

    >>> ink_threshold(np.bincount([10] * 5 + [200] * 95, minlength=256))
    86
    >>> ink_threshold(np.bincount([198, 200, 202] * 100, minlength=256)) is None
    True
    """
    paper = _quantile(hist, 0.75)
    spread = _quantile(hist, 0.95) - paper
    dark = _quantile(hist, 0.001)
    if paper - dark < max(_MIN_CONTRAST, 4 * spread):
        return None
    return int(min(paper - 0.6 * (paper - dark), paper - 2 * spread))


def ink_contrast(grey: np.ndarray) -> np.ndarray:
    """(H, W) uint8 ink-dark -> float32 with paper ~0 and ink ~1, levels measured on this line.

    Paper is the median of the pixels above the ink threshold, ink the 30th percentile of those at or
    below it. The line is known to hold ink (:func:`has_ink` decided on the full-resolution image; a
    line without is all zeros before this): after shrinking, a thin stroke may be only a little darker
    than the paper, and must still come out as ink.
    """
    hist = np.bincount(grey.ravel(), minlength=256)
    t = ink_threshold(hist)
    if t is None:  # faint after shrinking: split halfway between paper and darkest ink
        t = (_quantile(hist, 0.75) + _quantile(hist, 0.001)) // 2
    if t is not None and hist[: t + 1].any() and hist[t + 1:].any():
        paper = float(_quantile(hist[t + 1:], 0.5) + t + 1)
        ink = float(_quantile(hist[: t + 1], _INK_PERCENTILE))
        span = max(paper - ink, float(_MIN_SPAN))
    else:
        paper, span = float(_quantile(hist, 0.5)), 255.0
    out = (paper - grey.astype(np.float32)) * np.float32(1.0 / span)
    return np.clip(out, 0.0, 1.0, out=out)


def ink_mask(grey: np.ndarray) -> np.ndarray | None:
    """Boolean ink pixels without isolated specks; None if the image has no ink/paper contrast, or if
    most of its dark pixels are isolated specks (sensor noise, paper grain, JPEG ringing: strokes keep
    nearly all of theirs, noise under a tenth)."""
    t = ink_threshold(np.bincount(grey.ravel(), minlength=256))
    if t is None:
        return None
    mask = grey <= t
    # Count ink in each 3x3 neighbourhood: a 1-px stroke keeps 3 (itself and two along the stroke),
    # an isolated speck or a pair of specks has fewer.
    m = np.pad(mask.astype(np.uint8), 1)
    h, w = mask.shape
    count = np.zeros((h, w), np.uint8)
    for dy in range(3):
        for dx in range(3):
            count += m[dy:dy + h, dx:dx + w]
    strokes = mask & (count >= 3)
    if strokes.sum() < _MIN_STROKE_FRACTION * mask.sum():
        return None
    return strokes


def ink_box(grey: np.ndarray, trim: float = _ROW_TRIM) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of the ink, bottom/right exclusive; None when there is no ink.
    ``trim`` is the fraction of ink rows dropped at the top and at the bottom."""
    mask = ink_mask(grey)
    if mask is None:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    if cols.size == 0:
        return None
    rows = np.cumsum(mask.sum(axis=1, dtype=np.int64))
    total = rows[-1]
    top = int(np.searchsorted(rows, trim * total, side="right"))
    bottom = int(np.searchsorted(rows, (1.0 - trim) * total, side="left")) + 1
    return top, max(bottom, top + 1), int(cols[0]), int(cols[-1]) + 1


def has_ink(grey: np.ndarray) -> bool:
    """Whether an (H, W) uint8 ink-dark image shows any ink: the one "no ink" decision (see the
    module docstring). Dark pixels must stand out from the paper by more than its noise and form
    strokes, not scattered specks.

    >>> paper = np.full((40, 200), 250, np.uint8)
    >>> noisy = np.clip(np.random.default_rng(0).normal(250, 8, paper.shape), 0, 255).astype(np.uint8)
    >>> faint = paper.copy(); faint[15:25, 20:180:6] = 215  # pale strokes, 35 grey levels deep
    >>> has_ink(paper), has_ink(noisy), has_ink(faint)
    (False, False, True)
    """
    return ink_box(grey) is not None


def is_blank(x: torch.Tensor) -> bool:
    """Whether a stem output is a line with no ink (the stem makes such lines all zeros)."""
    return not bool(x.any())


def pad_images(tensors: Sequence[torch.Tensor], pad_width_to: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Stem outputs, (1, H, W_i) tensors -> a zero-padded (B, 1, H, W) batch (paper is 0), W the widest
    rounded up to a multiple of ``pad_width_to``, and (B,) long widths. Training and reading both batch
    lines with it."""
    widths = [t.shape[-1] for t in tensors]
    out = torch.zeros(len(tensors), 1, tensors[0].shape[-2], -(-max(widths) // pad_width_to) * pad_width_to)
    for j, t in enumerate(tensors):
        out[j, :, :, : t.shape[-1]] = t
    return out, torch.tensor(widths, dtype=torch.long)


def crop_to_ink(grey: np.ndarray, trim: float = _ROW_TRIM) -> np.ndarray:
    """The tight crop around the ink; the image unchanged when it has no ink.

    >>> img = np.full((50, 80), 250, np.uint8); img[10:30, 20:60] = 5; img[45, 2] = 0  # a speck
    >>> crop_to_ink(img).shape
    (20, 40)
    """
    box = ink_box(grey, trim)
    if box is None:
        return grey
    top, bottom, left, right = box
    return grey[top:bottom, left:right]


_SHEAR_STEP = 0.05  # resolution of the slant search, as tan(angle): ~3 degrees near upright


def estimate_slant(mask: np.ndarray, max_shear: float = 1.0) -> float:
    """The shear ``s`` that stands a line's strokes upright when pixel (x, y) moves to
    x + s * (y - centre); positive for writing that leans right.

    The score of a candidate (after Vinciarelli and Luettin's deslanting) sums, over the columns whose
    ink forms one unbroken vertical run after the shear, the square of that run's length: upright
    downstrokes make long unbroken columns, slanted ones only short pieces. Ties go to the smaller shear,
    so upright print is left alone.

    >>> m = np.zeros((40, 120), bool)
    >>> for y in range(40):  # three 3-px strokes leaning right by 0.5 (the top 20 px right of the foot)
    ...     for x0 in (20, 50, 80): m[y, x0 + (39 - y) // 2:x0 + (39 - y) // 2 + 3] = True
    >>> estimate_slant(m)
    0.5
    """
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return 0.0
    h, w = mask.shape
    yc = (h - 1) / 2.0
    dy = ys.astype(np.float32) - np.float32(yc)
    steps = int(round(max_shear / _SHEAR_STEP))
    candidates = sorted((k * _SHEAR_STEP for k in range(-steps, steps + 1)), key=abs)
    pad = int(math.ceil(max_shear * (yc + 1))) + 1
    best, best_score = 0.0, -1.0
    for s in candidates:
        cols = np.rint(xs + s * dy).astype(np.int64) + pad
        n = w + 2 * pad
        count = np.bincount(cols, minlength=n)
        top = np.full(n, h, np.int64)
        bottom = np.full(n, -1, np.int64)
        np.minimum.at(top, cols, ys)
        np.maximum.at(bottom, cols, ys)
        runs = count[(count > 0) & (bottom - top + 1 == count)]
        score = float(np.sum(runs.astype(np.float64) ** 2))
        if score > best_score * (1 + 1e-9):
            best, best_score = s, score
    return round(best, 4)


def deslant(grey: np.ndarray, max_shear: float = 1.0) -> np.ndarray:
    """An ink-dark (H, W) uint8 line sheared upright (:func:`estimate_slant`) and cropped to its ink
    columns again; unchanged when it has no ink or already stands upright."""
    mask = ink_mask(grey)
    if mask is None:
        return grey
    s = estimate_slant(mask, max_shear)
    if s == 0.0:
        return grey
    h, w = grey.shape
    yc = (h - 1) / 2.0
    ys, xs = np.nonzero(mask)
    moved = xs + s * (ys - yc)
    left = math.floor(float(moved.min()))
    width = max(1, math.ceil(float(moved.max())) - left + 1)
    paper = _quantile(np.bincount(grey.ravel(), minlength=256), 0.5)
    # output (u, v) samples input (u + left - s * (v - yc), v)
    coeffs = (1.0, -s, left + s * yc, 0.0, 1.0, 0.0)
    out = Image.fromarray(grey).transform((width, h), Image.Transform.AFFINE, coeffs,
                                          Image.Resampling.BILINEAR, fillcolor=paper)
    return np.asarray(out)


# ---------------------------------------------------------------------------------------------------
# Step 3 (optional): scale by the core


_CORE_LEVEL = 0.4  # rows whose (median-filtered) ink is at least this fraction of the densest row's form the core
_MAX_ZOOM = 2.5  # the core never magnifies a line by more than this over scaling it by its ink height
_MAX_ASPECT = 2.0  # stroke spacing stretches or squeezes a line by at most this factor


def stroke_spacing(mask: np.ndarray) -> float:
    """Mean distance in pixels between strokes along the rows of ``mask`` (a line's core): its width
    over the mean number of paper-to-ink steps per row, counting ink at the left edge as one; 0 when
    the rows hold no ink. Wide letters have few strokes for their width, narrow ones many.

    >>> m = np.zeros((10, 120), bool); m[:, 5:120:12] = m[:, 6:120:12] = True  # 2-px strokes every 12 px
    >>> stroke_spacing(m)
    12.0
    """
    if mask.size == 0:
        return 0.0
    starts = (mask[:, 1:] & ~mask[:, :-1]).sum() + mask[:, 0].sum()
    return mask.shape[1] * mask.shape[0] / float(starts) if starts else 0.0


def core_band(mask: np.ndarray) -> tuple[int, int]:
    """(top, bottom) rows of a line's core, bottom exclusive: where its ink is dense across the line.

    Letters without ascenders or descenders fill the core, so the horizontal ink profile has a plateau
    there and falls to a few strokes above and below it. The profile is median-filtered over ~4 % of
    the height (a ruled baseline or an underline is one dense row, not a core), and the core runs from
    the first to the last row holding at least 40 % of the densest row's ink.

    >>> m = np.zeros((60, 200), bool)
    >>> m[25:45, 10:190:4] = True  # x-height strokes every 4 px
    >>> m[5:25, 20:190:30] = m[45:58, 40:190:50] = True  # a few ascenders and descenders
    >>> m[50, :] = True  # an underline
    >>> core_band(m)
    (25, 45)
    """
    profile = mask.sum(axis=1, dtype=np.float64)
    k = max(1, mask.shape[0] // 25) | 1  # odd: centred
    if k > 1:  # a running median: drops lone dense rows, keeps the core's edges where they are
        padded = np.pad(profile, k // 2, mode="edge")
        profile = np.median(np.lib.stride_tricks.sliding_window_view(padded, k), axis=1)
    rows = np.flatnonzero(profile >= _CORE_LEVEL * profile.max())
    return int(rows[0]), int(rows[-1]) + 1


@dataclass(frozen=True)
class ZoneFit:
    """Where :func:`zone_layout` puts a line: its core rows ``[top, bottom)`` in the cropped line, the
    core's scale (output rows per input row) and the output width."""

    top: int
    bottom: int
    scale: float
    width: int


def zone_fit(grey: np.ndarray, height: int, core: float, *, spacing: float = 0.0, narrowest: float = 0.0,
             max_width: int | None = None) -> ZoneFit:
    """The geometry of :func:`zone_layout` (same arguments) without drawing the line."""
    h, w = grey.shape
    mask = ink_mask(grey)
    top, bottom = core_band(mask) if mask is not None else (0, h)
    core_h = max(bottom - top, h * core / _MAX_ZOOM)
    scale = max(1, round(core * height)) / core_h
    aspect = 1.0
    if spacing > 0 and mask is not None:
        gap = stroke_spacing(mask[top:bottom])
        if gap > 0:
            aspect = min(_MAX_ASPECT, max(1 / _MAX_ASPECT, spacing * core_h / gap))
    width = max(MIN_WIDTH, round(w * scale * aspect), round(w * height / h * narrowest))
    if max_width is not None:
        width = min(width, max_width)
    return ZoneFit(top, bottom, scale, width)


def zone_layout(grey: np.ndarray, height: int, core: float, *, spacing: float = 0.0, narrowest: float = 0.0,
                max_width: int | None = None) -> np.ndarray:
    """An ink-dark (H, W) uint8 line cropped to its ink, laid out on ``height`` rows by its core.

    The core (:func:`core_band`) is scaled to ``core * height`` rows, centred; the width scales with it,
    or, with ``spacing``, so that the line's strokes (:func:`stroke_spacing`) stand ``spacing`` core
    heights apart, changing the aspect by at most ``_MAX_ASPECT`` either way. The rows above and below
    take the ascender and descender zones at the core's scale where they fit, squeezed vertically where
    they do not, and paper where they are short. A line whose core would magnify it by more than
    ``_MAX_ZOOM`` over plain scaling (a dash, a row of dots) is read as if its core were taller.
    With ``narrowest`` no line comes out narrower than that fraction of its width by plain scaling.
    ``max_width`` squeezes longer lines, as plain scaling does.

    >>> line = np.full((60, 200), 250, np.uint8)
    >>> for x in range(10, 190, 6):  # 2-px x-height strokes, and long ascenders and descenders
    ...     line[25:45, x:x + 2] = 0; line[0:25, x:x + 2] = 0 if x % 30 == 10 else 250
    ...     line[45:60, x:x + 2] = 0 if x % 48 == 10 else 250
    >>> out = zone_layout(line, 32, 0.5)  # the core, rows 25-44, becomes rows 8-23: width x 0.8
    >>> out.shape, bool((out[:8] < 128).any()), bool((out[24:] < 128).any())  # both zones squeezed in
    ((32, 160), True, True)
    """
    h = grey.shape[0]
    fit = zone_fit(grey, height, core, spacing=spacing, narrowest=narrowest, max_width=max_width)
    top, bottom, scale, width = fit.top, fit.bottom, fit.scale, fit.width
    core_rows = max(1, round(core * height))
    above = (height - core_rows) // 2
    below = height - core_rows - above
    # rows each outer zone gets: its own height at the core's scale, at most the room on its side
    up = min(above, max(1, round(top * scale))) if top else 0
    down = min(below, max(1, round((h - bottom) * scale))) if bottom < h else 0
    out = np.full((height, width), _quantile(np.bincount(grey.ravel(), minlength=256), 0.5), np.uint8)
    for part, start, rows in ((grey[:top], above - up, up), (grey[top:bottom], above, core_rows),
                              (grey[bottom:], above + core_rows, down)):
        if rows:
            out[start:start + rows] = np.asarray(Image.fromarray(part).resize((width, rows), Image.Resampling.BILINEAR))
    return out


# ---------------------------------------------------------------------------------------------------
# Step 5 (optional): one stroke width


def stroke_width(x: np.ndarray) -> float:
    """Mean stroke width in pixels of a normalised line (ink ~1, paper ~0): twice the ink mass over
    its total variation. A stroke of width w and length L has mass ~wL and edges ~2L long, so the
    ratio is w, whatever the ink's contrast or blur; 0 for a line without ink.

    >>> x = np.zeros((20, 40), np.float32); x[5:15, 10:13] = 1.0  # one 3-px wide vertical bar
    >>> round(stroke_width(x), 2)  # the bar's two ends count as edge too
    2.31
    """
    edges = float(np.abs(np.diff(x, axis=0)).sum() + np.abs(np.diff(x, axis=1)).sum())
    return 2.0 * float(x.sum()) / edges if edges > 0 else 0.0


def set_stroke_width(x: np.ndarray, target: float, max_change: float = 6.0) -> np.ndarray:
    """Thicken or thin a normalised line's strokes until :func:`stroke_width` is about ``target``.

    Each 3x3 max (min) filter widens (narrows) every stroke by one pixel on both sides; a fraction of
    a filter's change is blended in for the remainder, which moves the width linearly. At most
    ``max_change`` pixels are added or removed, so a line that is mostly blots or hairlines is moved
    toward the target rather than destroyed.
    """
    change = target - stroke_width(x)
    op = np.maximum if change > 0 else np.minimum
    left = min(abs(change), max_change)
    while left > 1e-3:
        part = min(1.0, left / 2.0)
        x = x + np.float32(part) * (_rank3(x, op) - x)
        left -= 2.0 * part
    return x


def _with_stroke(big: np.ndarray, cfg: StemConfig) -> np.ndarray:
    """Step 4 with one stroke width, on the line scaled to twice the output size (so a filter moves a
    stroke edge by half an output pixel): normalise contrast, set the width, shrink to the output size."""
    x = set_stroke_width(ink_contrast(big), 2.0 * cfg.stroke)
    size = (max(MIN_WIDTH, (big.shape[1] + 1) // 2), cfg.height)
    out = np.asarray(Image.fromarray(x).resize(size, Image.Resampling.BILINEAR), np.float32)
    return np.clip(out, 0.0, 1.0)


# ---------------------------------------------------------------------------------------------------
# Augmentation (training only)


def distort(grey: np.ndarray, cfg: StemConfig, rng: np.random.Generator) -> np.ndarray:
    """Random training distortions of an ink-dark uint8 line; every random draw comes from ``rng``."""
    if cfg.crop_to_ink:  # untrimmed: the normal crop after the warp trims once, as for clean lines
        grey = crop_to_ink(grey, trim=0.0)
    work_h = round(1.5 * cfg.height)  # cheap, yet fine enough that a 3x3 filter moves strokes by <1 output px
    img = Image.fromarray(grey)
    if img.height > 2 * work_h:  # antialiased shrink first; the affine warp below does not antialias
        img = img.resize((max(1, round(img.width * work_h / img.height)), work_h), Image.Resampling.BILINEAR)
    img = _warp(img, cfg, rng, work_h)
    img = _stroke(img, cfg, rng)
    if rng.random() < cfg.low_res:
        f = rng.uniform(0.4, 0.9) * cfg.height / img.height
        small = (max(2, round(img.width * f)), max(2, round(img.height * f)))
        img = img.resize(small, Image.Resampling.BILINEAR).resize(img.size, Image.Resampling.BILINEAR)
    if rng.random() < cfg.blur:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.5)))
    return _contrast(np.asarray(img), cfg, rng)


def _warp(img: Image.Image, cfg: StemConfig, rng: np.random.Generator, work_h: int) -> Image.Image:
    """One affine map: scale to ``work_h`` rows, horizontal stretch, slant (shear), rotation."""
    scale = work_h / img.height
    sx = scale * math.exp(rng.uniform(-1, 1) * math.log1p(cfg.stretch))
    shear = rng.uniform(-cfg.slant, cfg.slant)
    angle = math.radians(rng.uniform(-cfg.rotation, cfg.rotation))
    c, s = math.cos(angle), math.sin(angle)
    # forward map (x, y) -> R @ Shear @ S @ (x, y); shear moves the top right for positive slant
    a = np.array([[c, -s], [s, c]]) @ np.array([[1.0, -shear], [0.0, 1.0]]) @ np.diag([sx, scale])
    w, h = img.size
    corners = a @ np.array([[0, w, 0, w], [0, 0, h, h]], np.float64)
    lo = corners.min(axis=1)
    size = np.ceil(corners.max(axis=1) - lo).astype(int) + 1
    inv = np.linalg.inv(a)
    offset = inv @ lo  # output pixel (u, v) samples input inv @ ((u, v) + lo)
    paper = _quantile(np.bincount(np.asarray(img).ravel(), minlength=256), 0.5)
    coeffs = (inv[0, 0], inv[0, 1], offset[0], inv[1, 0], inv[1, 1], offset[1])
    return img.transform((int(size[0]), int(size[1])), Image.Transform.AFFINE, coeffs, Image.Resampling.BILINEAR, fillcolor=paper)


def _stroke(img: Image.Image, cfg: StemConfig, rng: np.random.Generator) -> Image.Image:
    if rng.random() >= cfg.thickness:
        return img
    grey = np.asarray(img)
    if rng.random() < 0.5:  # thicker: spread the dark ink
        out = _rank3(grey, np.minimum)
        if rng.random() < 0.2:
            out = _rank3(out, np.minimum)
        return Image.fromarray(out)
    # Thinner: a full erosion can erase 2-px strokes, so blend part of it back; the per-line contrast
    # step later darkens what remains, leaving a thin stroke at full contrast.
    eroded = _rank3(grey, np.maximum).astype(np.float32)
    keep = np.float32(rng.uniform(0.15, 0.6))
    return Image.fromarray((eroded + keep * (grey - eroded) + 0.5).astype(np.uint8))


def _rank3(grey: np.ndarray, op) -> np.ndarray:
    """3x3 min or max filter as two separable passes (PIL's rank filter is ~100x slower)."""
    p = np.pad(grey, 1, mode="edge")
    rows = op(op(p[:-2], p[1:-1]), p[2:])
    return op(op(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])


def _contrast(grey: np.ndarray, cfg: StemConfig, rng: np.random.Generator) -> np.ndarray:
    """Lighter ink and darker paper, sharing a random loss of contrast (a lookup table: cheap)."""
    lost = rng.uniform(0, cfg.contrast)
    ink = rng.uniform(0, lost)
    paper = 1.0 - (lost - ink)
    lut = np.rint(255 * (ink + (paper - ink) * np.arange(256) / 255)).astype(np.uint8)
    return lut[grey]


def add_noise(x: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with a random std in [0, strength], on the normalised (ink ~1) line."""
    if strength <= 0:
        return x
    x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(rng.uniform(0, strength))
    return np.clip(x, 0.0, 1.0, out=x)
