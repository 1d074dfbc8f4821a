"""Lines written with a pen: single-stroke (Hershey) letters drawn as wobbly, variable-width strokes.

A font outline is filled; handwriting is a pen moved along a path. Hershey faces (the ``hershey-fonts``
package, MIT) store each letter as the pen's path, so here every stroke is a polyline whose points wobble
with smooth noise and whose width follows a pressure curve: thin where the pen lands and lifts, swelling
and thinning along the way, the way a ballpoint's line does. Letters get their own baseline, size and
(with ``glyph_affine``) shear and rotation; words drift in size, height and slant; in the script faces
the letters of a word may be joined by thin connecting strokes. Strokes are drawn at :data:`SUPERSAMPLE`
times the size and box-filtered down, which antialiases them.

:meth:`PenRenderer.draw` returns an ink mask in the form of ``LineRenderer._draw`` (mode L, ink 255 on 0,
a little room around the ink), so the renderer's geometry, paper, ink and degradations apply unchanged.

Faces come in design families like fonts (:data:`PEN_FACES`), and :data:`HELD_OUT_PEN_FAMILIES` are kept
for the ``test_unseen_font`` split. The held-out family is named rather than drawn by
:func:`textrec.data.fonts.held_out_families`' hash: with three designs a hash could take the only
cursive one out of training. The serif family (Times roman and italic) is held out: it is the least
like handwriting, so training keeps both hands, the joined script and the print (sans) one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from textrec.charset import DEFAULT_CHARSET
from textrec.data.text import detached_gaps

SUPERSAMPLE = 3
_BASE = 9.0  # the baseline's y in Hershey units (y grows downwards), the same in every face
_WAVES = 3  # plane waves summed into the smooth wobble of a line's strokes
_BEARING = 0.12  # space either side of a print glyph's ink, in x-heights (Hershey's own are ~0.3)
_SPACE = 0.65  # a space, in mean lowercase advances, before SynthConfig.word_space scales it
_LOWER = "abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class PenFace:
    """One Hershey face: the package's name for it, its design family, whether its letters join."""

    face: str  # hershey-fonts' name, e.g. "cursive"
    family: str  # held-out splits are by family
    joined: bool = False  # a script whose lowercase letters start and end on the joining line

    @property
    def name(self) -> str:
        return f"hershey-{self.face}"


# The Hershey faces that write the Latin charset in a usable hand. Left out: the gothic faces
# (blackletter), the duplex and triplex faces (futuram, rowmand, rowmant, timesrb, timesib: outlines
# drawn as parallel strokes, which a pen would draw as doubled lines), and the Greek, Cyrillic,
# Japanese and symbol faces, which put other letters or symbols on the ASCII codes.
PEN_FACES = (
    PenFace("cursive", "script", joined=True),
    PenFace("scripts", "script", joined=True),
    PenFace("scriptc", "script", joined=True),  # the script's complex cut: thick parts in two strokes
    PenFace("futural", "sans"),
    PenFace("rowmans", "sans"),  # futural's twin: 73 of the 78 charset glyphs are the same
    PenFace("timesr", "serif"),
    PenFace("timesi", "serif"),  # Times's italic: the same family, as a font's italic is
)
HELD_OUT_PEN_FAMILIES = frozenset({"serif"})


def split_pen_faces(faces: Sequence[PenFace] = PEN_FACES) -> tuple[list[PenFace], list[PenFace]]:
    """(training faces, held-out faces): the held-out families go wholly to the second list."""
    return ([f for f in faces if f.family not in HELD_OUT_PEN_FAMILIES],
            [f for f in faces if f.family in HELD_OUT_PEN_FAMILIES])


@dataclass(frozen=True)
class _Glyph:
    strokes: tuple[np.ndarray, ...]  # (n, 2) float arrays of pen positions, Hershey units
    left: float  # x of the glyph's left side
    advance: float
    ink: tuple[float, float] | None  # x of the leftmost and rightmost ink
    entry: np.ndarray | None  # the leftmost stroke start, where a joining stroke arrives
    exit: np.ndarray | None  # the rightmost stroke end, where one leaves

    def spacing(self, joined: bool, bearing: float) -> tuple[float, float]:
        """(left side, advance), units. Hershey's print faces are spaced for type, about twice as
        loosely as a hand writes, so their glyphs get ``bearing`` either side of the ink instead;
        a script keeps its own, which put one letter's exit on the next one's entry."""
        if joined or self.ink is None:
            return self.left, self.advance
        return self.ink[0] - bearing, self.ink[1] - self.ink[0] + 2 * bearing


@dataclass(frozen=True)
class _Face:
    glyphs: dict[str, _Glyph]
    body: float  # ink height of "Hdgp", units
    xheight: float  # height of "xzvnmwu" above the baseline, units

    @property
    def scale(self) -> float:
        """The face's apparent size in units: the geometric mean of the body and the x-height (relative
        to a typical 0.42 of the body), as :attr:`textrec.data.fonts.FontSpec.scale` measures fonts, so
        faces with small lowercase letters are drawn neither tiny nor huge."""
        return math.sqrt(self.body * self.xheight / 0.42)


@cache
def load_face(face: str) -> _Face:
    """A Hershey face's glyphs for the charset, read once per process (~30 ms)."""
    from HersheyFonts import HersheyFonts

    hf = HersheyFonts()
    try:
        hf.load_default_font(face)
    except ValueError as e:
        raise ValueError(f"no Hershey face {face!r}; hershey-fonts has {hf.default_font_names}") from e
    glyphs = {}
    for ch, g in hf.all_glyphs.items():
        if ch not in DEFAULT_CHARSET.chars:
            continue
        strokes = tuple(np.asarray(s, dtype=np.float64) for s in g.strokes if s)
        entry = min((s[0] for s in strokes), key=lambda p: p[0], default=None)
        exit_ = max((s[-1] for s in strokes), key=lambda p: p[0], default=None)
        xs = [float(p[0]) for s in strokes for p in s]
        ink = (min(xs), max(xs)) if xs else None
        glyphs[ch] = _Glyph(strokes, float(g.left_offset), float(g.char_width), ink, entry, exit_)
    ys = [p[1] for ch in "Hdgp" for s in glyphs[ch].strokes for p in s]
    x_top = min(p[1] for ch in "xzvnmwu" for s in glyphs[ch].strokes for p in s)
    return _Face(glyphs, float(max(ys) - min(ys)), float(_BASE - x_top))


def _u(rng: np.random.Generator, r: Sequence[float]) -> float:
    return float(rng.uniform(r[0], r[1]))


def _clipped_normal(rng: np.random.Generator) -> float:
    return float(np.clip(rng.standard_normal(), -3.0, 3.0))


@dataclass(frozen=True)
class _Placement:
    """Where a glyph goes: Hershey points -> px, scaled by ``unit``, on the baseline at ``y``, turned by
    ``affine`` about ``centre`` (units from the glyph's left side on the baseline), sheared by the
    word's ``slant``."""

    x: float
    y: float
    unit: float
    slant: float
    left: float
    centre: tuple[float, float]
    affine: np.ndarray | None

    def __call__(self, p: np.ndarray) -> np.ndarray:
        q = (np.atleast_2d(p) - (self.left, _BASE)) * self.unit  # y < 0 above the baseline
        if self.affine is not None:
            centre = np.asarray(self.centre) * self.unit
            q = (q - centre) @ self.affine.T + centre
        q[:, 0] -= self.slant * q[:, 1]  # y grows downwards: a positive slant leans right
        q += (self.x, self.y)
        return q if np.ndim(p) == 2 else q[0]


@dataclass
class _Stroke:
    points: np.ndarray  # (n, 2) px
    weight: float = 1.0  # relative pen width: connecting strokes are thinner


class PenRenderer:
    """Draws text lines with a pen in Hershey faces; ``config`` is a
    :class:`textrec.data.synth.SynthConfig` (its size, spacing, jitter, ``glyph_affine``,
    ``punct_gap*`` and ``pen_*`` fields). Picklable: faces load lazily, once per process.

    >>> import numpy as np
    >>> from textrec.data.synth import SynthConfig
    >>> pen = PenRenderer(SynthConfig())
    >>> rng = np.random.default_rng(0)
    >>> mask, xheight = pen.draw("pen on paper", pen.choose("pen on paper", rng), rng)
    >>> mask.mode, 5 < xheight < 40
    ('L', True)
    """

    def __init__(self, config: Any, faces: Sequence[PenFace] | None = None) -> None:
        self.config = config
        self.faces = list(split_pen_faces()[0] if faces is None else faces)
        families: dict[str, list[PenFace]] = {}
        for f in self.faces:
            families.setdefault(f.family, []).append(f)
        self._families = [families[k] for k in sorted(families)]

    @property
    def face_names(self) -> list[str]:
        return [f.name for f in self.faces]

    @staticmethod
    def covers(face: PenFace, text: str) -> bool:
        """Whether ``face`` has a glyph for every character of ``text``."""
        glyphs = load_face(face.face).glyphs
        return all(ch in glyphs for ch in set(text))

    def choose(self, text: str, rng: np.random.Generator) -> PenFace | None:
        """A face for ``text``, family first, then face, among those that can write all of it; None
        when none can (the caller draws the line with a font)."""
        families = [[f for f in fam if self.covers(f, text)] for fam in self._families]
        families = [fam for fam in families if fam]
        if not families:
            return None
        styles = families[int(rng.integers(len(families)))]
        return styles[int(rng.integers(len(styles)))]

    def draw(self, text: str, face: PenFace, rng: np.random.Generator) -> tuple[Image.Image, float]:
        """The text as an ink mask (mode L, ink 255 on 0) and the x-height it was written at, px."""
        if not text.strip():
            raise ValueError("cannot draw an empty line")
        c = self.config
        target = _u(rng, c.body_height)
        unit = target / load_face(face.face).scale  # px per Hershey unit
        width = _u(rng, c.pen_width) * target
        strokes = self._layout(text, face, unit, target, rng)
        self._wobble(strokes, _u(rng, c.pen_jitter) * target, target, rng)
        mask = self._ink(strokes, width, _u(rng, c.pen_pressure), target, rng)
        return mask, float(load_face(face.face).xheight * unit)

    # --- where the pen goes --------------------------------------------------------------------------

    def _layout(self, text: str, face: PenFace, unit: float, target: float, rng: np.random.Generator
                ) -> list[_Stroke]:
        c = self.config
        f = load_face(face.face)
        bearing = _BEARING * f.xheight
        space = _SPACE * float(np.mean([f.glyphs[ch].spacing(face.joined, bearing)[1] for ch in _LOWER]))
        join = face.joined and rng.random() < c.pen_join_p
        tracking = _u(rng, c.tracking) * target * (0.25 if join else 1.0)  # joined letters stay close
        words = text.split(" ")
        tight = detached_gaps(words) if c.punct_gap_p > 0 and rng.random() < c.punct_gap_p else None
        strokes: list[_Stroke] = []
        x, scale, shift, slant = 0.0, 0.0, 0.0, 0.0
        for k, word in enumerate(words):
            scale = 0.8 * scale + 0.6 * c.word_size_jitter * rng.standard_normal()
            shift = 0.5 * shift + 0.87 * c.word_jitter * rng.standard_normal()
            slant = 0.6 * slant + 0.8 * 0.05 * rng.standard_normal()  # a hand's slant drifts word to word
            wunit = unit * (1.0 + scale)
            exit_: np.ndarray | None = None
            prev = ""
            for ch in word:
                g = f.glyphs[ch]
                left, advance = g.spacing(face.joined, bearing)
                gunit = wunit * (1.0 + c.glyph_size_jitter * rng.standard_normal())
                y = (shift + c.glyph_jitter * rng.standard_normal()) * target
                at = _Placement(x, y, gunit, slant, left, (0.5 * advance, -0.5 * f.xheight), self._affine(rng))
                if join and exit_ is not None and g.entry is not None and prev.isalpha() and ch.islower():
                    entry = at(g.entry)
                    if np.hypot(*(entry - exit_)) < 0.5 * target:
                        strokes.append(_Stroke(_connector(exit_, entry), 0.55))
                strokes += [_Stroke(at(s)) for s in g.strokes]
                exit_ = at(g.exit) if g.exit is not None else None
                prev = ch
                x += advance * gunit + tracking
            gap = space * wunit * _u(rng, c.word_space)
            if tight is not None and k < len(tight) and tight[k]:
                gap *= _u(rng, c.punct_gap)
            x += gap
        return strokes

    def _affine(self, rng: np.random.Generator) -> np.ndarray | None:
        """A glyph's own shear, rotation and scale (``glyph_affine``), or None when that lever is off."""
        a = self.config.glyph_affine
        if a <= 0:
            return None
        shear, rot, scale = (a * _clipped_normal(rng), a * _clipped_normal(rng),
                             1.0 + 0.5 * a * _clipped_normal(rng))
        return scale * np.array([[math.cos(rot), -math.sin(rot)], [math.sin(rot), math.cos(rot)]]) \
            @ np.array([[1.0, -shear], [0.0, 1.0]])

    @staticmethod
    def _wobble(strokes: list[_Stroke], amp: float, target: float, rng: np.random.Generator) -> None:
        """Move every point by one smooth random field (a sum of plane waves a letter or two long), so
        strokes bend without breaking and joined strokes stay joined."""
        if amp <= 0 or not strokes:
            return
        k = rng.uniform(0.5, 1.6, _WAVES) * target  # wavelengths, px
        angle = rng.uniform(0, 2 * np.pi, _WAVES)
        wave = np.stack([np.cos(angle), np.sin(angle)], axis=1) * (2 * np.pi / k)[:, None]  # (W, 2)
        phase = rng.uniform(0, 2 * np.pi, (_WAVES, 2))
        weight = rng.standard_normal((_WAVES, 2)) * amp * math.sqrt(2.0 / _WAVES)
        for s in strokes:
            arg = s.points @ wave.T  # (n, W)
            s.points = s.points + np.stack(
                [(weight[:, d] * np.sin(arg + phase[:, d])).sum(axis=1) for d in range(2)], axis=1)

    # --- ink -----------------------------------------------------------------------------------------

    @staticmethod
    def _ink(strokes: list[_Stroke], width: float, pressure: float, target: float, rng: np.random.Generator
             ) -> Image.Image:
        """Each stroke as round-capped segments whose width follows a pressure curve along it and a slow
        swell along the line; drawn at SUPERSAMPLE x and box-filtered down."""
        pts = np.concatenate([s.points for s in strokes])
        pad = width + 2.0
        lo = pts.min(axis=0) - pad
        size = np.ceil(pts.max(axis=0) + pad - lo).astype(int) + 1
        canvas = Image.new("L", (int(size[0]) * SUPERSAMPLE, int(size[1]) * SUPERSAMPLE), 0)
        draw = ImageDraw.Draw(canvas)
        swell_period, swell_phase = rng.uniform(3, 10) * target, rng.uniform(0, 2 * np.pi)
        for s in strokes:
            p = (s.points - lo) * SUPERSAMPLE
            seg = np.hypot(*np.diff(p, axis=0).T) if len(p) > 1 else np.zeros(0)
            along = np.concatenate([[0.0], np.cumsum(seg)]) / SUPERSAMPLE  # px along the stroke
            length = along[-1]
            wave = 0.5 * (1 + np.sin(2 * np.pi * along / (rng.uniform(0.6, 2.0) * target) + rng.uniform(0, 6.3)))
            ends = np.clip(np.minimum(along, length - along) / (1.2 * width), 0.0, 1.0)
            swell = 1 + 0.15 * np.sin(2 * np.pi * s.points[:, 0] / swell_period + swell_phase)
            w = width * s.weight * (1 - pressure * wave) * (0.55 + 0.45 * ends) * swell * SUPERSAMPLE
            w = np.maximum(w, 1.0 * SUPERSAMPLE)  # a pen never draws thinner than a hairline
            _polyline(draw, p, w)
        return canvas.reduce(SUPERSAMPLE)


def _polyline(draw: ImageDraw.ImageDraw, p: np.ndarray, w: np.ndarray) -> None:
    """Points ``p`` joined by a pen of width ``w`` at each point (px of the canvas): consecutive segments
    of the same whole-pixel width go into one line, and a disc at every point rounds joints and ends
    (PIL's own round joints are drawn in Python, several times slower)."""
    for (x, y), r in zip(p.tolist(), (0.5 * w).tolist(), strict=True):
        draw.ellipse((x - r, y - r, x + r, y + r), fill=255)
    if len(p) == 1:
        return
    seg = np.maximum(1, np.rint(0.5 * (w[:-1] + w[1:]))).astype(int)  # each segment's width
    cuts = np.flatnonzero(np.diff(seg)) + 1
    for a, b in zip([0, *cuts.tolist()], [*cuts.tolist(), len(seg)], strict=True):
        draw.line([tuple(q) for q in p[a:b + 1].tolist()], fill=255, width=int(seg[a]))


def _connector(a: np.ndarray, b: np.ndarray, n: int = 6) -> np.ndarray:
    """A thin joining stroke from ``a`` to ``b``: a quadratic curve that sags a little, as a pen
    dragged along the joining line does."""
    mid = 0.5 * (a + b) + (0.0, 0.15 * float(np.hypot(*(b - a))))
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * a + 2 * (1 - t) * t * mid + t ** 2 * b
