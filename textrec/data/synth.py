"""Synthetic handwriting lines: text from a sentence source, drawn with a handwriting font, then
distorted and degraded until it looks less like a font and more like ink on paper.

This is the platform's offline default dataset. The model must read *real* handwriting, so every
setting is a random range (:class:`SynthConfig`) and variety matters more than pretty renders: sizes,
letter and word spacing, per-word and per-glyph baseline jitter, slant, rotation, stretch, a wavy
baseline, stroke weight, ink and paper tones, paper texture and shading, ruled lines, pen pressure,
blur, low-resolution passes, JPEG artefacts and noise.

Levers that make the strokes look more like a pen's, each off by default and each drawing no random
numbers while off (so old seeds render the same lines): a smooth elastic warp, erosion or dilation,
stroke-width swelling along the line, per-glyph shear and rotation in glyph mode, tight gaps for IAM's
detached punctuation, IAM-spaced texts, and ``pen_p``: lines written with a variable-width pen along
single-stroke Hershey letters (:mod:`textrec.data.pen`) instead of filled font outlines.

A line is a function of (text, font list, config, rng) only. :func:`synthesize` derives each line's
generator from ``(seed, index)``, so a store's content is the same for a seed whatever the number of
worker processes. The height is left natural (~45-85 px with tight margins): the stem normalises it.
"""

from __future__ import annotations

import io
import math
import multiprocessing as mp
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont

from textrec.charset import DEFAULT_CHARSET
from textrec.data.fonts import FontError, FontSpec, discover_fonts, split_fonts
from textrec.data.pen import PenFace, PenRenderer, split_pen_faces
from textrec.data.store import LineWriter
from textrec.data.text import TextSource, detached_gaps, open_text_source

SPLITS = ("train", "val", "test", "test_unseen_font")
Range = tuple[float, float]


@dataclass(frozen=True)
class SynthConfig:
    """Every random range of the renderer. Probabilities end in ``_p``; lengths are pixels unless
    they say they are fractions of the font size."""

    # size and spacing
    body_height: Range = (32.0, 56.0)  # ink height of "Hdgp", px, in a font of usual proportions
    word_size_jitter: float = 0.05  # sd of the words' relative size changes (drifting word to word)
    word_space: Range = (0.5, 1.7)  # gap between words, in widths of the font's space
    word_jitter: float = 0.05  # sd of the words' baseline shifts (drifting), fraction of size
    glyph_mode_p: float = 0.3  # draw the line glyph by glyph: letter spacing and per-glyph jitter
    tracking: Range = (-0.04, 0.12)  # letter spacing in glyph mode, fraction of size
    glyph_jitter: float = 0.03  # sd of each glyph's baseline shift in glyph mode, fraction of size
    glyph_size_jitter: float = 0.04  # sd of each glyph's relative size change in glyph mode
    # geometry
    slant: Range = (-0.25, 0.35)  # shear, tan of the angle from vertical; positive leans right
    rotation: Range = (-1.5, 1.5)  # degrees
    stretch: Range = (0.8, 1.2)  # horizontal scale
    wave_p: float = 0.5  # wavy baseline and uneven letter widths
    wave_amplitude: Range = (0.5, 2.5)  # px, vertical
    wave_period: Range = (80.0, 500.0)  # px
    margin: tuple[int, int] = (2, 12)  # px of paper around the ink, drawn per side
    neighbour_p: float = 0.12  # strokes of the lines above or below showing at the edge, as in page crops
    # strokes
    bold_p: float = 0.15  # font drawn with a 1 px outline stroke
    thicken_p: float = 0.1  # 3x3 dilation of the ink
    ink_gamma: Range = (0.6, 1.4)  # > 1 thins the antialiased strokes, < 1 thickens them
    # ink and paper
    ink: Range = (0.0, 90.0)  # grey level of full ink
    paper: Range = (185.0, 255.0)  # grey level of the paper
    min_contrast: float = 100.0
    pressure: Range = (0.0, 0.4)  # depth of slow ink-darkness changes along the line
    texture: Range = (0.0, 16.0)  # amplitude of blotchy paper texture, grey levels
    shading: Range = (0.0, 25.0)  # uneven lighting from one end of the line to the other
    rule_p: float = 0.08  # a ruled paper line under the writing
    # degradations
    blur_p: float = 0.4
    blur: Range = (0.015, 0.055)  # Gaussian radius, fraction of the x-height
    lowres_p: float = 0.25
    lowres: Range = (0.4, 0.8)  # scale of a down-and-up resampling pass (x-height kept >= 7 px)
    jpeg_p: float = 0.15
    jpeg_quality: tuple[int, int] = (25, 75)
    noise: Range = (0.0, 7.0)  # sd of pixel noise, grey levels
    # Levers towards pen on paper. Each is off at 0 (the default), and a lever that is off draws no
    # random numbers, so with all of them off a seed renders exactly the lines it rendered before.
    glyph_affine: float = 0.0  # sd of each glyph's own shear and rotation (radians) in glyph mode; scale: half
    morph_p: float = 0.0  # erode or dilate the ink (half each; erosion only where strokes survive it)
    morph_px: tuple[int, int] = (1, 1)  # radius of the square kernel, px (2: 5x5, heavy at these sizes)
    width_var_p: float = 0.0  # strokes swell and thin slowly along the line, as a ballpoint's do
    elastic_p: float = 0.0  # a smooth random displacement field warps the ink
    elastic_alpha: Range = (0.6, 1.8)  # sd of the displacement, px
    elastic_sigma: Range = (8.0, 20.0)  # spacing of the field's random control points, px
    punct_gap_p: float = 0.0  # draw the spaces IAM's texts put around punctuation (``said ,``) tight
    punct_gap: Range = (0.0, 0.3)  # those gaps, as a fraction of a word gap
    iam_spacing_p: float = 0.0  # lines whose text is tokenised like IAM's (textrec.data.text.iam_spacing)
    # the pen renderer (textrec.data.pen): single-stroke Hershey faces drawn with a variable-width pen
    pen_p: float = 0.0  # fraction of lines drawn by the pen instead of a font
    pen_width: Range = (0.04, 0.1)  # pen width, fraction of the body height (1.6-4 px at 40 px)
    pen_pressure: Range = (0.1, 0.4)  # depth of the width changes along a stroke
    pen_jitter: Range = (0.01, 0.04)  # sd of the smooth wobble of the strokes, fraction of the body height
    pen_join_p: float = 0.7  # lines in a cursive face whose letters are joined within words

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, tuple) and (len(value) != 2 or value[0] > value[1]):
                raise ValueError(f"SynthConfig.{name} must be a (low, high) range, got {value}")
            if name.endswith("_p") and not 0.0 <= value <= 1.0:
                raise ValueError(f"SynthConfig.{name} is a probability, got {value}")
        if self.glyph_affine < 0:
            raise ValueError(f"SynthConfig.glyph_affine is a standard deviation (>= 0), got {self.glyph_affine}")
        if self.morph_px[0] < 1:
            raise ValueError(f"SynthConfig.morph_px is a kernel radius of at least 1 px, got {self.morph_px}")

    @classmethod
    def from_mapping(cls, overrides: Mapping[str, Any], *, where: str = "data.synth.") -> SynthConfig:
        """The defaults with ``overrides`` (a training config's ``data.synth``); an unknown key is a
        :class:`textrec.config.ConfigError` that names it and lists the valid ones."""
        from textrec.config import from_dict

        return from_dict(cls, overrides, where=where)

    def recipe(self) -> dict[str, Any]:
        """The fields that decide the rendered lines, for naming a pool: all of them except the levers
        still at their (off) defaults, which draw nothing; so a pool rendered before the levers existed
        keeps its name, and turning any lever on names a new one."""
        defaults = SynthConfig()
        return {k: v for k, v in asdict(self).items()
                if k not in _LEVER_FIELDS or v != getattr(defaults, k)}


# The fields added with the levers (after the first pools were rendered): see SynthConfig.recipe.
_LEVER_FIELDS = frozenset((
    "glyph_affine", "morph_p", "morph_px", "width_var_p", "elastic_p", "elastic_alpha", "elastic_sigma",
    "punct_gap_p", "punct_gap", "iam_spacing_p", "pen_p", "pen_width", "pen_pressure", "pen_jitter",
    "pen_join_p"))


def _u(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(rng.uniform(r[0], r[1]))


@dataclass
class _Item:
    """One word or glyph placed on the canvas, at its baseline-left anchor."""

    x: float
    y: float
    text: str
    font: ImageFont.FreeTypeFont
    stroke: int
    advance: float
    affine: tuple[float, float, float] | None = None  # the glyph's own (shear, rotation, scale)


class LineRenderer:
    """Draws text lines with a list of fonts. Picklable (fonts load lazily per process, so a renderer
    can go to DataLoader workers); fonts are drawn family first, then style, so families with many
    styles do not dominate.

    >>> import numpy as np
    >>> r = LineRenderer()
    >>> img, font = r.render("A short line.", np.random.default_rng(0))
    >>> img.dtype, img.ndim, font in r.font_names
    (dtype('uint8'), 2, True)
    """

    _CACHE_SIZE = 256

    def __init__(self, config: SynthConfig | None = None, fonts: Sequence[FontSpec] | None = None,
                 pen_faces: Sequence[PenFace] | None = None) -> None:
        self.config = config or SynthConfig()
        if fonts is None:
            fonts = split_fonts(discover_fonts())[0]
        if not fonts:
            raise FontError("LineRenderer needs at least one font")
        self.pen = PenRenderer(self.config, pen_faces)  # draws pen_p of the lines (training faces by default)
        families: dict[str, list[FontSpec]] = {}
        for spec in fonts:
            families.setdefault(spec.family, []).append(spec)
        self.fonts = list(fonts)
        self._families = [families[k] for k in sorted(families)]
        self._cache: dict[tuple[str, int], ImageFont.FreeTypeFont] = {}
        self._extents: dict[str, tuple[float, float, float, float]] = {}

    @property
    def font_names(self) -> list[str]:
        return [f.name for f in self.fonts]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = {}
        return state

    def _font(self, spec: FontSpec, size: float) -> ImageFont.FreeTypeFont:
        key = (spec.name, max(4, int(round(size))))
        font = self._cache.get(key)
        if font is None:
            if len(self._cache) >= self._CACHE_SIZE:
                self._cache.clear()
            font = self._cache[key] = spec.load(key[1])
        return font

    def _extent(self, spec: FontSpec) -> tuple[float, float, float, float]:
        """How far any glyph of the charset reaches beyond its pen position, per pixel of font size:
        (left, top, right beyond the advance, bottom), measured once per font. Bounding the canvas with
        these is much cheaper than measuring every word."""
        ext = self._extents.get(spec.name)
        if ext is None:
            font = self._font(spec, 100)
            boxes = [(font.getbbox(ch, anchor="ls"), font.getlength(ch)) for ch in DEFAULT_CHARSET.chars
                     if ch != " "]
            ext = self._extents[spec.name] = (
                min(0.0, min(b[0] for b, _ in boxes)) / 100, min(b[1] for b, _ in boxes) / 100,
                max(0.0, max(b[2] - a for b, a in boxes)) / 100, max(b[3] for b, _ in boxes) / 100)
        return ext

    def render(self, text: str, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """One line: ``(image, font name)``, the image (H, W) uint8, dark ink on light paper. A line
        drawn by the pen (``pen_p``) is named by its Hershey face (``hershey-cursive``, say)."""
        if not text.strip():
            raise ValueError("cannot render an empty line")
        face = self.pen.choose(text, rng) if self.config.pen_p > 0 and rng.random() < self.config.pen_p \
            else None
        if face is not None:
            mask, xheight = self.pen.draw(text, face, rng)
            name = face.name
        else:
            styles = self._families[int(rng.integers(len(self._families)))]
            spec = styles[int(rng.integers(len(styles)))]
            mask, size = self._draw(text, spec, rng)
            xheight, name = size * spec.xheight, spec.name
        alpha = self._geometry(mask, rng)
        alpha = self._crop(alpha, rng)
        if rng.random() < self.config.neighbour_p:
            alpha = self._neighbour(alpha, rng)
        image = self._compose(alpha, rng)
        return self._degrade(image, rng, xheight), name

    # --- drawing -------------------------------------------------------------------------------------

    def _layout(self, text: str, spec: FontSpec, rng: np.random.Generator) -> tuple[list[_Item], float]:
        c = self.config
        size = _u(rng, c.body_height) / spec.scale
        stroke = int(rng.random() < c.bold_p)
        glyph_mode = rng.random() < c.glyph_mode_p
        tracking = _u(rng, c.tracking) * size
        space = self._font(spec, size).getlength(" ")
        words = text.split(" ")
        tight = detached_gaps(words) if c.punct_gap_p > 0 and rng.random() < c.punct_gap_p else None
        items: list[_Item] = []
        x, scale, shift = 0.0, 0.0, 0.0
        for k, word in enumerate(words):
            # Size and baseline drift from word to word (AR(1)), rather than jumping independently.
            scale = 0.8 * scale + 0.6 * c.word_size_jitter * rng.standard_normal()
            shift = 0.5 * shift + 0.87 * c.word_jitter * rng.standard_normal()
            wsize, y = size * (1.0 + scale), shift * size
            if glyph_mode:
                for ch in word:
                    font = self._font(spec, wsize * (1.0 + c.glyph_size_jitter * rng.standard_normal()))
                    advance = font.getlength(ch)
                    items.append(_Item(x, y + c.glyph_jitter * size * rng.standard_normal(), ch, font, stroke,
                                       advance, self._glyph_affine(rng)))
                    x += advance + tracking
            else:
                font = self._font(spec, wsize)
                items.append(_Item(x, y, word, font, stroke, font.getlength(word)))
                x += items[-1].advance
            gap = space * _u(rng, c.word_space)
            if tight is not None and k < len(tight) and tight[k]:
                gap *= _u(rng, c.punct_gap)
            x += gap
        return items, size

    def _glyph_affine(self, rng: np.random.Generator) -> tuple[float, float, float] | None:
        """A glyph's own (shear, rotation in radians, scale), within 3 sd; None when the lever is off."""
        a = self.config.glyph_affine
        if a <= 0:
            return None
        shear, rot, scale = np.clip(rng.standard_normal(3), -3.0, 3.0)
        return float(a * shear), float(a * rot), float(1.0 + 0.5 * a * scale)

    def _draw(self, text: str, spec: FontSpec, rng: np.random.Generator) -> tuple[Image.Image, float]:
        """The text as an ink mask (mode L, ink 255 on 0) with a little room around the ink, and the
        font size it was drawn at."""
        items, size = self._layout(text, spec, rng)
        el, et, er, eb = self._extent(spec)
        left = min(it.x + el * it.font.size - it.stroke for it in items)
        top = min(it.y + et * it.font.size - it.stroke for it in items)
        right = max(it.x + it.advance + er * it.font.size + it.stroke for it in items)
        bottom = max(it.y + eb * it.font.size + it.stroke for it in items)
        pad = 2 + int(0.05 * size)  # words may use contextual glyphs a little larger than the lone ones
        if self.config.glyph_affine > 0:  # room for glyphs turned about their middles (3 sd at most)
            pad += int(np.ceil(5.5 * self.config.glyph_affine * size))
        width, height = int(right - left) + 2 * pad, int(bottom - top) + 2 * pad
        mask = Image.new("L", (max(width, 1), max(height, 1)), 0)
        draw = ImageDraw.Draw(mask)
        for it in items:
            xy = (it.x - left + pad, it.y - top + pad)
            if it.affine is None:
                draw.text(xy, it.text, font=it.font, fill=255, anchor="ls", stroke_width=it.stroke,
                          stroke_fill=255)
            else:
                self._paste_glyph(mask, xy, it)
        return mask, size

    @staticmethod
    def _paste_glyph(mask: Image.Image, xy: tuple[float, float], it: _Item) -> None:
        """Draw one glyph on its own canvas, shear, turn and scale it about its middle, and lay its ink
        over ``mask`` with its anchor at ``xy``."""
        assert it.affine is not None
        shear, rot, scale = it.affine
        box_f = it.font.getbbox(it.text, anchor="ls", stroke_width=it.stroke)
        left, top = math.floor(box_f[0]), math.floor(box_f[1])
        right, bottom = math.ceil(box_f[2]), math.ceil(box_f[3])
        m = 2 + int(0.6 * max(right - left, bottom - top) * (abs(shear) + abs(rot) + abs(scale - 1)))
        ox, oy = math.floor(xy[0]) + left - m, math.floor(xy[1]) + top - m  # the canvas's place in mask
        w, h = right - left + 2 * m, bottom - top + 2 * m
        glyph = Image.new("L", (max(w, 1), max(h, 1)), 0)
        ImageDraw.Draw(glyph).text((xy[0] - ox, xy[1] - oy), it.text, font=it.font, fill=255, anchor="ls",
                                   stroke_width=it.stroke, stroke_fill=255)
        fwd = scale * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) \
            @ np.array([[1.0, -shear], [0.0, 1.0]])
        inv = np.linalg.inv(fwd)
        centre = np.array([w / 2, h / 2])
        shift = centre - inv @ centre  # output p -> input inv @ (p - centre) + centre
        glyph = glyph.transform(glyph.size, Image.Transform.AFFINE,
                                (inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1]),
                                resample=Image.Resampling.BILINEAR, fillcolor=0)
        box = (ox, oy, ox + glyph.width, oy + glyph.height)
        mask.paste(ImageChops.lighter(mask.crop(box), glyph), box)

    # --- geometry ------------------------------------------------------------------------------------

    def _geometry(self, mask: Image.Image, rng: np.random.Generator) -> np.ndarray:
        """Slant, stretch and rotate in one affine pass; then stroke weight and waves. Returns alpha in
        [0, 1] as float32."""
        c = self.config
        slant, stretch = _u(rng, c.slant), _u(rng, c.stretch)
        theta = np.deg2rad(_u(rng, c.rotation))
        rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
        fwd = rot @ np.array([[stretch, -slant], [0.0, 1.0]])  # y grows downwards: -slant leans right
        w, h = mask.size
        corners = fwd @ np.array([[0, w, 0, w], [0, 0, h, h]], dtype=np.float64)
        lo, hi = corners.min(axis=1), corners.max(axis=1)
        inv = np.linalg.inv(fwd)
        shift = inv @ lo
        data = (inv[0, 0], inv[0, 1], shift[0], inv[1, 0], inv[1, 1], shift[1])
        size = (int(np.ceil(hi[0] - lo[0])) + 1, int(np.ceil(hi[1] - lo[1])) + 1)
        mask = mask.transform(size, Image.Transform.AFFINE, data, resample=Image.Resampling.BILINEAR, fillcolor=0)
        if rng.random() < c.thicken_p:
            mask = mask.filter(ImageFilter.MaxFilter(3))
        if c.morph_p > 0 and rng.random() < c.morph_p:
            mask = self._morph(mask, rng)
        if c.width_var_p > 0 and rng.random() < c.width_var_p:
            mask = self._width_var(mask, rng)
        gamma = np.linspace(0.0, 1.0, 256, dtype=np.float32) ** _u(rng, c.ink_gamma)
        alpha = gamma[np.asarray(mask)]  # a lookup table: much cheaper than a power per pixel
        if rng.random() < c.wave_p:
            alpha = self._wave(alpha, rng)
        if c.elastic_p > 0 and rng.random() < c.elastic_p:
            alpha = self._elastic(alpha, rng)
        return alpha

    def _morph(self, mask: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Dilate or erode the ink by a square kernel of radius ``morph_px``. An erosion that would wipe
        out strokes (thin fonts) is not applied: after dilating back it must cover 90 % of the ink."""
        lo, hi = self.config.morph_px
        r = int(rng.integers(lo, hi + 1))
        m = np.asarray(mask)
        if rng.random() < 0.5:
            return Image.fromarray(_square(m, r, np.maximum))
        eroded = _square(m, r, np.minimum)
        kept = _square(eroded, r, np.maximum)[m > 127] > 64
        return Image.fromarray(eroded) if kept.size and kept.mean() >= 0.9 else mask

    def _width_var(self, mask: Image.Image, rng: np.random.Generator) -> Image.Image:
        """Blend towards a dilated mask here and an eroded one there along a slow random field: the
        strokes of a ballpoint swell where it is pressed and thin where it skims."""
        w, h = mask.size
        m = np.asarray(mask, dtype=np.float32)
        thick, thin = _square(m, 1, np.maximum), _square(m, 1, np.minimum)
        field = np.tanh(1.5 * self._smooth_field(rng, h, w, int(rng.integers(25, 90))))
        out = m + np.clip(field, 0, None) * (thick - m) + 0.6 * np.clip(-field, 0, None) * (thin - m)
        return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8))

    def _elastic(self, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Warp by a smooth random displacement field: normal offsets on a coarse grid of
        ``elastic_sigma`` px, bilinearly upsampled, scaled to ``elastic_alpha`` px; sampled bilinearly."""
        c = self.config
        amp, cell = _u(rng, c.elastic_alpha), max(2, int(round(_u(rng, c.elastic_sigma))))
        pad = int(np.ceil(2 * amp)) + 1
        alpha = np.pad(alpha, pad)
        h, w = alpha.shape
        dx = amp * self._smooth_field(rng, h, w, cell)
        dy = amp * self._smooth_field(rng, h, w, cell)
        sx = np.clip(np.arange(w, dtype=np.float32)[None, :] + dx, 0, w - 1.001)
        sy = np.clip(np.arange(h, dtype=np.float32)[:, None] + dy, 0, h - 1.001)
        x0, y0 = sx.astype(np.int32), sy.astype(np.int32)
        fx, fy = sx - x0, sy - y0
        flat, i = alpha.ravel(), y0 * w + x0  # gathers by flat index: several times faster than 2-D
        top = flat.take(i) * (1 - fx) + flat.take(i + 1) * fx
        bottom = flat.take(i + w) * (1 - fx) + flat.take(i + w + 1) * fx
        return (top * (1 - fy) + bottom * fy).astype(np.float32)

    def _wave(self, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Shift columns up and down along a slow sine (a wandering baseline) and resample them along
        another (letters a little wider here, narrower there)."""
        c = self.config
        h, w = alpha.shape
        x = np.arange(w, dtype=np.float32)
        amp = _u(rng, c.wave_amplitude)
        dy = amp * np.sin(2 * np.pi * x / _u(rng, c.wave_period) + rng.uniform(0, 2 * np.pi))
        dx = 0.6 * amp * np.sin(2 * np.pi * x / _u(rng, c.wave_period) + rng.uniform(0, 2 * np.pi))
        src_x = np.clip(x - dx, 0, w - 1)
        x0 = np.minimum(src_x.astype(np.int64), max(w - 2, 0))
        fx = (src_x - x0)[None, :]
        if w > 1:
            alpha = alpha[:, x0] * (1 - fx) + alpha[:, x0 + 1] * fx
        pad = int(np.ceil(amp)) + 1
        padded = np.pad(alpha, ((pad, pad), (0, 0)))
        src_y = np.arange(h + 2 * pad, dtype=np.float32)[:, None] - dy[None, :]
        y0 = np.clip(np.floor(src_y).astype(np.int64), 0, h + 2 * pad - 2)
        fy = np.clip(src_y - y0, 0.0, 1.0)
        cols = np.arange(w)[None, :]
        return (padded[y0, cols] * (1 - fy) + padded[y0 + 1, cols] * fy).astype(np.float32)

    def _crop(self, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Cut to the ink, then add a random paper margin on each side."""
        rows = np.flatnonzero(alpha.max(axis=1) > 0.1)
        cols = np.flatnonzero(alpha.max(axis=0) > 0.1)
        if rows.size:
            alpha = alpha[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        lo, hi = self.config.margin
        t, b, left, r = (int(v) for v in rng.integers(lo, hi + 1, size=4))
        return np.pad(alpha, ((t, b), (left, r)))

    @staticmethod
    def _neighbour(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Overlay a shifted copy of the line's own ink so that only its descenders (or ascenders)
        poke in at the top (or bottom) edge, like the neighbouring lines in a crop from a page."""
        h, w = alpha.shape
        rows = int(h * rng.uniform(0.72, 0.9))
        dx = int(rng.integers(-w // 2, w // 2 + 1))
        ghost = np.roll(alpha, dx, axis=1)
        ghost = np.pad(ghost, ((rows, 0), (0, 0)))[:h] if rng.random() < 0.5 else \
            np.pad(ghost, ((0, rows), (0, 0)))[rows:]
        return np.maximum(alpha, ghost)

    # --- ink, paper and degradations ---------------------------------------------------------------------

    def _smooth_field(self, rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
        """Low-frequency noise in about [-1, 1]: random values on a coarse grid, bilinearly upscaled."""
        small = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
        img = Image.fromarray(small).resize((w, h), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.float32)

    def _compose(self, alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        c = self.config
        h, w = alpha.shape
        paper = _u(rng, c.paper)
        ink = min(_u(rng, c.ink), paper - c.min_contrast)
        background = np.full((h, w), paper, dtype=np.float32)
        background += _u(rng, c.texture) * self._smooth_field(rng, h, w, 12)
        shade = _u(rng, c.shading) * rng.choice([-1.0, 1.0])
        background += shade * np.linspace(-0.5, 0.5, w, dtype=np.float32)[None, :]
        if rng.random() < c.rule_p:
            self._rule(background, rng, paper)
        pressure = _u(rng, c.pressure)
        if pressure > 0:
            alpha = alpha * (1.0 - pressure * 0.5 * (1.0 + np.tanh(self._smooth_field(rng, h, w, 40))))
        return background * (1.0 - alpha) + ink * alpha

    @staticmethod
    def _rule(background: np.ndarray, rng: np.random.Generator, paper: float) -> None:
        """A faint, slightly tilted ruled line near the bottom of the line, drawn into the paper."""
        h, w = background.shape
        y = rng.uniform(0.7, 0.95) * h + rng.uniform(-0.01, 0.01) * np.arange(w)
        rows = np.clip(np.round(y).astype(np.int64), 0, h - 1)
        darkness = rng.uniform(25, 70)
        thickness = int(rng.integers(1, 3))
        for k in range(thickness):
            r = np.clip(rows + k, 0, h - 1)
            background[r, np.arange(w)] = np.minimum(background[r, np.arange(w)], paper - darkness)

    def _degrade(self, image: np.ndarray, rng: np.random.Generator, xheight: float) -> np.ndarray:
        """Blur and resolution loss scale with the letters' x-height (px), so small writing stays
        legible: blur radii are fractions of it, and a low-resolution pass keeps it >= 7 px."""
        c = self.config
        img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
        if rng.random() < c.blur_p:
            img = img.filter(ImageFilter.GaussianBlur(_u(rng, c.blur) * xheight))
        if rng.random() < c.lowres_p:
            s = max(_u(rng, c.lowres), min(1.0, 7.0 / max(xheight, 1.0)))
            small = (max(1, int(img.width * s)), max(1, int(img.height * s)))
            img = img.resize(small, Image.Resampling.BILINEAR).resize(img.size, Image.Resampling.BILINEAR)
        if rng.random() < c.jpeg_p:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1)))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("L")
        out = np.asarray(img, dtype=np.float32)
        sd = _u(rng, c.noise)
        if sd > 0:
            out = out + sd * rng.standard_normal(out.shape, dtype=np.float32)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _square(a: np.ndarray, r: int, op: Any) -> np.ndarray:
    """``op`` (np.maximum: dilate, np.minimum: erode) over every (2r+1)-pixel square, in two 1-D passes;
    outside the image is paper (0). Much faster than PIL's rank filters."""
    h, w = a.shape
    p = np.pad(a, r)
    rows = p[:, :w].copy()
    for k in range(1, 2 * r + 1):
        op(rows, p[:, k:k + w], out=rows)
    out = rows[:h].copy()
    for k in range(1, 2 * r + 1):
        op(out, rows[k:k + h], out=out)
    return out


# --- building a store ------------------------------------------------------------------------------------

_CHUNK = 16
_WORKER: dict[str, Any] = {}


# How synthetic lines are split (the one place these fractions live): train/val/test shares of n,
# then held-out-font test lines as a further share of n (at least MIN_UNSEEN_FONT).
SPLIT_FRACTIONS = {"train": 0.90, "val": 0.05, "test": 0.05}
UNSEEN_FONT_FRACTION, MIN_UNSEEN_FONT = 0.05, 4


def split_plan(n: int, seed: int) -> list[str]:
    """The split of each line: ``n`` lines of train/val/test (:data:`SPLIT_FRACTIONS`, interleaved by a
    seeded shuffle, at least one val and one test line when n >= 3), then ``test_unseen_font`` lines."""
    n_val = max(1, round(SPLIT_FRACTIONS["val"] * n)) if n >= 3 else 0
    n_test = max(1, round(SPLIT_FRACTIONS["test"] * n)) if n >= 3 else 0
    plan = np.array(["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test, dtype=object)
    plan = plan[np.random.default_rng([seed, 1]).permutation(n)]
    return [str(s) for s in plan] + ["test_unseen_font"] * max(MIN_UNSEEN_FONT, round(UNSEEN_FONT_FRACTION * n))


def lines_for_train(n_train: int) -> int:
    """How many lines to synthesize so that ``n_train`` of them land in the train split.

    >>> lines_for_train(900)
    1000
    """
    return math.ceil(n_train / SPLIT_FRACTIONS["train"] - 1e-9)


def _init_worker(seed: int, source: TextSource, renderers: dict[str, LineRenderer]) -> None:
    _WORKER.update(seed=seed, source=source, renderers=renderers)


def _render_chunk(jobs: list[tuple[int, str]]) -> list[tuple[np.ndarray, str, str]]:
    """Render ``(index, renderer key)`` jobs; each line's generator comes from (seed, index) alone."""
    out = []
    for i, key in jobs:
        rng = np.random.default_rng([_WORKER["seed"], i])
        text = _WORKER["source"].sample(rng)
        image, font = _WORKER["renderers"][key].render(text, rng)
        out.append((image, text, font))
    return out


def _run(chunks: list[list[tuple[int, str]]], workers: int, init_args: tuple
         ) -> Iterator[list[tuple[np.ndarray, str, str]]]:
    if workers <= 1:
        _init_worker(*init_args)
        try:
            yield from map(_render_chunk, chunks)
        finally:
            _WORKER.clear()
        return
    # spawn, not fork: the parent may hold threads (tqdm, torch) that fork would copy mid-lock
    with mp.get_context("spawn").Pool(workers, _init_worker, init_args) as pool:
        yield from pool.imap(_render_chunk, chunks)


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def synthesize(n: int, out: Path, *, seed: int = 0, fonts_dirs: Sequence[Path] = (), workers: int | None = None,
               corpus: str | os.PathLike | None = None, config: SynthConfig | None = None, progress: bool = True) -> Path:
    """Render ``n`` lines (plus ~5% out-of-font test lines) into the line store ``out``.

    Train/val/test lines use the training fonts (and pen faces); ``test_unseen_font`` lines use only
    the held-out font families (and pen faces). The store's metadata records the config, seed, fonts and corpus. The content (and
    so ``content_hash``) depends on the seed, config, corpus and fonts, never on ``workers``.
    """
    from tqdm import tqdm

    if n < 1:
        raise ValueError(f"number of lines must be at least 1, got {n}")
    config = config or SynthConfig()
    fonts = discover_fonts(fonts_dirs)
    train_fonts, held_out = split_fonts(fonts)
    if not held_out:
        raise FontError(f"need fonts from at least two families to hold one out; found {len(fonts)} "
                        f"font(s) of family {fonts[0].family!r}")
    source = open_text_source(corpus, charset=DEFAULT_CHARSET, iam_spacing_p=config.iam_spacing_p)
    train_faces, held_out_faces = split_pen_faces()
    renderers = {"train": LineRenderer(config, train_fonts, train_faces),
                 "held_out": LineRenderer(config, held_out, held_out_faces)}
    plan = split_plan(n, seed)
    jobs = [(i, "held_out" if s == "test_unseen_font" else "train") for i, s in enumerate(plan)]
    chunks = [jobs[k:k + _CHUNK] for k in range(0, len(jobs), _CHUNK)]
    workers = max(1, min(workers or default_workers(), len(chunks)))
    meta = {"generator": "textrec.data.synth", "config": asdict(config), "seed": seed, "n": n,
            "corpus": source.describe(), "fonts": {"train": [f.name for f in train_fonts],
                                                   "held_out": [f.name for f in held_out]},
            "pen_faces": {"train": [f.name for f in train_faces], "held_out": [f.name for f in held_out_faces]}}
    with LineWriter(out, meta=meta, splits=SPLITS) as writer, \
            tqdm(total=len(plan), unit="line", desc="synth", disable=not progress) as bar:
        i = 0
        for rendered in _run(chunks, workers, (seed, source, renderers)):
            for image, text, font in rendered:
                writer.add(image, text, split=plan[i], source="synth", writer=font)
                i += 1
            bar.update(len(rendered))
    return Path(out)
