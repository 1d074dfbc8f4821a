"""What a paragraph model reads: a whole page scaled into a fixed height and a width budget.

:class:`PageStem` is the page counterpart of :class:`textrec.stem.LineStem`, with the same settings
(:class:`textrec.stem.StemConfig`, stored in the model artifact as for lines) read differently:

1. **Grey**, as for lines (:func:`textrec.stem.to_grey`).
2. **Crop to ink** (``crop_to_ink``): the page's margins carry nothing to read. :meth:`PageStem.page_box`
   gives that region in page pixels, so a reader can place what it read back on the page.
3. **Fit.** The crop is scaled (antialiased, aspect kept) by the largest factor that fits it into
   ``height`` rows and ``max_width`` columns, and put at the top left of a canvas ``height`` rows high:
   rows below a wide page are paper. Every page of a batch thus has one height (what the model is built
   for) and at most ``max_width`` columns, padded per batch as lines are.
4. **Contrast**, per page, as for lines (:func:`textrec.stem.ink_contrast`): ink ~1, paper ~0.

A page without ink is all zeros (:func:`textrec.stem.is_blank` reads it back), as a blank line is.
``augment=True`` (training only) shrinks the page by up to ``stretch`` (so the model sees writing of
several sizes), blurs it with probability ``blur`` and adds noise up to ``noise``; the line-only
distortions (slant, rotation, stroke thickness, low resolution, deslanting) do not apply to pages.

    stem = PageStem(StemConfig(height=128, max_width=192))
    x = stem(page)          # (1, 128, W <= 192) float32
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageFilter

from textrec.stem import MIN_WIDTH, LineStem, add_noise, ink_box, ink_contrast, to_grey

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in page pixels, right/bottom exclusive


class PageStem(LineStem):
    """Page image -> float32 tensor (1, height, W <= max_width), ink ~1, paper ~0 (see the module doc).

    >>> from textrec.stem import StemConfig
    >>> page = np.full((300, 400), 240, np.uint8); page[50:250:40, 40:360] = 20  # five ruled strokes
    >>> x = PageStem(StemConfig(height=64, max_width=96))(page)  # ink 161 x 320 px -> 48 x 96
    >>> tuple(x.shape), float(x[0, :48].max()), float(x[0, 49:].max())
    ((1, 64, 96), 1.0, 0.0)
    """

    def __repr__(self) -> str:
        return f"PageStem({self.config})"

    def __call__(self, image: np.ndarray | Image.Image, rng: np.random.Generator | None = None,
                 augment: bool = False) -> torch.Tensor:
        grey = to_grey(image, "page")
        if not augment:
            return torch.from_numpy(self.normalise(grey))[None]
        rng = rng if rng is not None else np.random.default_rng()
        cfg = self.config
        shrink = math.exp(-rng.uniform(0, math.log1p(cfg.stretch)))
        blur = rng.uniform(0.3, 0.8) if rng.random() < cfg.blur else 0.0
        return torch.from_numpy(add_noise(self.normalise(grey, shrink, blur), cfg.noise, rng))[None]

    def page_box(self, grey: np.ndarray) -> Box:
        """The region of the page that the stem reads: its ink (with ``crop_to_ink``) or the whole page."""
        return self._box(grey, ink_box(grey))

    def _box(self, grey: np.ndarray, ink: tuple[int, int, int, int] | None) -> Box:
        if ink is None or not self.config.crop_to_ink:
            return 0, 0, int(grey.shape[1]), int(grey.shape[0])
        top, bottom, left, right = ink
        return left, top, right, bottom

    def fit(self, height: int, width: int, shrink: float = 1.0) -> tuple[int, int]:
        """(rows, columns) a ``height`` x ``width`` crop is scaled to: the largest fit, times ``shrink``."""
        cfg = self.config
        scale = min(cfg.height / max(1, height), cfg.max_width / max(1, width)) * shrink
        return (min(cfg.height, max(1, round(height * scale))),
                min(cfg.max_width, max(MIN_WIDTH, round(width * scale))))

    def read(self, image: np.ndarray | Image.Image) -> tuple[torch.Tensor, Box]:
        """The stem's tensor of a page and the region of the page it shows (:meth:`page_box`)."""
        x, box = self.normalise_with_box(to_grey(image, "page"))
        return torch.from_numpy(x)[None], box

    def normalise(self, grey: np.ndarray, shrink: float = 1.0, blur: float = 0.0) -> np.ndarray:
        """(H, W) uint8 ink-dark page -> (height, W') float32 ink-bright, the page at the top left
        (``shrink`` < 1 and a ``blur`` radius in output pixels are augmentation's)."""
        return self.normalise_with_box(grey, shrink, blur)[0]

    def normalise_with_box(self, grey: np.ndarray, shrink: float = 1.0,
                           blur: float = 0.0) -> tuple[np.ndarray, Box]:
        ink = ink_box(grey)
        x0, y0, x1, y1 = self._box(grey, ink)
        crop = grey[y0:y1, x0:x1]
        rows, cols = self.fit(crop.shape[0], crop.shape[1], shrink)
        out = np.zeros((self.config.height, cols), np.float32)
        if ink is not None:
            scaled = Image.fromarray(crop).resize((cols, rows), Image.Resampling.BILINEAR)
            if blur > 0:
                scaled = scaled.filter(ImageFilter.GaussianBlur(blur))
            out[:rows] = ink_contrast(np.asarray(scaled))
        return out, (x0, y0, x1, y1)

    def width_of(self, height: int, width: int) -> int:
        """Columns of a ``height`` x ``width`` page after fitting (before its ink crop): what batches
        of pages are sorted by, to keep their padding small."""
        return self.fit(height, width)[1]
