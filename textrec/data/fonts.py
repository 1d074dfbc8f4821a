"""Handwriting fonts: find them, check them, name them, and hold some out.

Fonts come from four places, in this order:

1. the installed PyPI ``fontpkg-*`` packages (each ships ``fontpkg_<family>/files/*.ttf``);
2. the Debian handwriting font packages, when installed (:data:`DEBIAN_FONTS`, below ``/usr/share/fonts``);
3. the npm ``@fontsource/*`` packages that ``make fonts`` installs into ``fonts/node_modules`` (or the
   folder named by ``TEXTREC_FONTSOURCE_DIR``): the latin, weight 400 file of each, its family named by
   the package;
4. any folders passed as ``fonts_dirs`` (searched recursively for ``.ttf``/``.otf``/``.woff``/``.woff2``).

A family is taken from the first place that has it (Caveat ships on PyPI and on npm; it is used once,
so no family weighs double and a held-out family has no copy left in training), and the first face of
a given name wins within it.

Each font file, and each named instance of a variable font (Caveat's Regular and Bold, say), becomes
one :class:`FontSpec` with a stable name such as ``caveat-bold``. A font is used only if it can write
the whole charset: every character must be in its character map, draw some ink and not draw the
missing-glyph box, and its lowercase letters must not be capitals (capitals-only fonts and fonts that
draw lowercase as small capitals are useless for learning lowercase). A font file that fails a check is
skipped with a warning that names the file and the reason; a ``fonts_dirs`` entry that is not a folder,
or holds no font files at all, is an error.

Whole families are held out for the ``test_unseen_font`` split: about 20% of the families, those whose
SHA-256 name hashes sort first, so the choice depends only on the names present.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import pkgutil
import re
import struct
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from textrec.charset import DEFAULT_CHARSET, Charset

FONT_SUFFIXES = (".ttf", ".otf", ".woff", ".woff2")
# The npm @fontsource packages, installed by `make fonts` from fonts/package.json beside the package.
FONTSOURCE_ENV = "TEXTREC_FONTSOURCE_DIR"
FONTSOURCE_ROOT = Path(__file__).resolve().parents[2] / "fonts" / "node_modules" / "@fontsource"
DEBIAN_ROOT = Path("/usr/share/fonts")
# Globs below DEBIAN_ROOT for the handwriting fonts of the Makefile's Debian packages. Explicit,
# because those folders also hold fonts that are not handwriting (the rest of fonts-dustin).
DEBIAN_FONTS = (
    "truetype/fifthhorseman/dkg*.ttf",  # fonts-dkg-handwriting
    "truetype/breip/*.ttf",
    "truetype/sjfonts/*.ttf",
    "truetype/femkeklaver/*.ttf",
    "truetype/kristi/*.ttf",
    "*/tlwg/Purisa*.[ot]tf",  # fonts-tlwg-purisa-ttf / -otf
    "*/dancingscript/*.[ot]tf",
    "*/havana/*.[ot]tf",
    "*/kaushanscript/*.[ot]tf",
    "truetype/ecolier-court/*.ttf",
    "truetype/dustin/Domestic_Manners.ttf",
    "truetype/rufscript/*.ttf",
    "*/comic-neue/*.[ot]tf",
    "truetype/kiloji/kiloji_p.ttf",  # fonts-kiloji: its proportional face (the others are monospaced)
)
HELD_OUT_FRACTION = 0.2
_CHECK_SIZE = 64
# Letters whose lowercase differs in shape from the capital; a median overlap above this means the
# font draws them as (small) capitals. Real hands score 0.15-0.65, capitals-only fonts 0.9+.
_CAPS_LETTERS = "abdeghnqrt"
_CAPS_OVERLAP = 0.8
# Median height of letters without ascenders or descenders, lowercase over capital: real hands measure
# 0.3-0.85, hand-drawn capitals-only fonts (whose letter shapes differ from case to case) 0.9+.
_SHORT_LETTERS = "acemnorsuvwxz"
_CAPS_HEIGHT = 0.9
# A character no handwriting font maps: it draws the font's missing-glyph shape (glyph 0).
_UNMAPPED = "\U0010fffd"


class FontError(ValueError):
    """A font or font folder cannot be used; the message names it and says why."""


@dataclass(frozen=True)
class FontSpec:
    """One usable font: a file, and the named instance when the file is a variable font."""

    name: str  # stable, e.g. "caveat-bold"
    family: str  # e.g. "caveat"; held-out splits are by family
    path: str
    variation: str | None = None
    body: float = 1.0  # ink height of "Hdgp" per pixel of font size
    xheight: float = 0.42  # height of "x" per pixel of font size

    @property
    def scale(self) -> float:
        """Apparent size per pixel of font size: the geometric mean of the body height and the
        x-height (relative to a typical 0.42 of the body), so that fonts with tiny lowercase letters
        and long ascenders are drawn neither tiny nor huge."""
        return math.sqrt(self.body * self.xheight / 0.42)

    def load(self, size: int) -> ImageFont.FreeTypeFont:
        font = ImageFont.truetype(self.path, max(1, int(size)))
        if self.variation is not None:
            font.set_variation_by_name(self.variation)
        return font


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "font"


# --- where fonts are ---------------------------------------------------------------------------------


def pypi_font_files() -> list[Path]:
    """Font files of the installed ``fontpkg-*`` packages, sorted by path."""
    files: list[Path] = []
    for mod in pkgutil.iter_modules():
        if not mod.name.startswith("fontpkg_"):
            continue
        root = Path(getattr(mod.module_finder, "path", "")) / mod.name / "files"
        if root.is_dir():
            files += [p for p in root.iterdir() if p.suffix.lower() in FONT_SUFFIXES]
    return sorted(set(files))


def debian_font_files(root: Path = DEBIAN_ROOT) -> list[Path]:
    """The Debian handwriting fonts that are installed (none when ``root`` is missing)."""
    files: set[Path] = set()
    for pattern in DEBIAN_FONTS:
        files.update(root.glob(pattern))
    return sorted(files)


def fontsource_root() -> Path:
    """The folder of the npm ``@fontsource/*`` package folders: ``$TEXTREC_FONTSOURCE_DIR`` when set."""
    return Path(os.environ.get(FONTSOURCE_ENV) or FONTSOURCE_ROOT)


def fontsource_font_files(root: str | os.PathLike | None = None) -> list[Path]:
    """The latin, weight 400 file of each installed ``@fontsource/<family>`` package (``.woff``, which
    fontTools reads without Brotli, else ``.woff2``), sorted; none when the folder is missing."""
    root = Path(root) if root is not None else fontsource_root()
    if not root.is_dir():
        return []
    files = []
    for package in sorted(p for p in root.iterdir() if p.is_dir()):
        candidates = [package / "files" / f"{package.name}-latin-400-normal{s}" for s in (".woff", ".woff2")]
        files += [p for p in candidates if p.is_file()][:1]
    return files


def fontsource_family(path: Path) -> str:
    """The family of a fontsource file: its package's name (``.../@fontsource/caveat/files/x.woff``)."""
    return slug(path.parent.parent.name)


def folder_font_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``.ttf``/``.otf``/``.woff``/``.woff2`` below ``folder``; an error if it is not a folder or
    holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FontError(f"{folder}: fonts folder does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
    if not files:
        raise FontError(f"{folder}: no .ttf, .otf, .woff or .woff2 font files in this folder")
    return files


# --- checking one font file ------------------------------------------------------------------------


def _mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    m = font.getmask(text)
    # Through bytes: numpy would read the core image element by element (~15x slower).
    return np.frombuffer(Image.Image()._new(m).tobytes(), np.uint8).reshape(m.size[1], m.size[0])


def _caps_overlap(font: ImageFont.FreeTypeFont) -> float:
    """Median overlap (IoU) of lowercase and capital letter shapes, each scaled to the same box."""
    def shape(c: str) -> np.ndarray:
        return np.asarray(Image.fromarray(_mask(font, c)).resize((24, 24), Image.Resampling.BILINEAR)) > 96

    ious = []
    for c in _CAPS_LETTERS:
        a, b = shape(c), shape(c.upper())
        ious.append((a & b).sum() / max(1, (a | b).sum()))
    return float(np.median(ious))


def _same_shape(a: np.ndarray, b: np.ndarray) -> bool:
    """The same glyph drawn twice (hinting may shift the grey levels of its edges a little)."""
    if a.shape != b.shape:
        return False
    a, b = a > 127, b > 127
    return bool((a & b).sum() >= 0.95 * max(1, (a | b).sum()))


def _caps_height_ratio(font: ImageFont.FreeTypeFont) -> float:
    """Median ink height of short lowercase letters over that of their capitals."""
    def height(c: str) -> float:
        _, top, _, bottom = font.getbbox(c, anchor="ls")
        return bottom - top

    return float(np.median([height(c) for c in _SHORT_LETTERS]) /
                 max(1.0, float(np.median([height(c.upper()) for c in _SHORT_LETTERS]))))


def _cmap(path: Path) -> set[int] | None:
    """The characters ``path`` maps; None for a ``.woff2`` when fontTools lacks its Brotli decoder
    (FreeType still reads it, and the ink and missing-glyph checks then catch unmapped characters)."""
    from fontTools.ttLib import TTFont, TTLibError

    log = logging.getLogger("fontTools")
    level = log.level
    log.setLevel(logging.ERROR)  # harmless table quirks of old fonts would flood the console
    try:
        with TTFont(str(path), lazy=True, fontNumber=0) as tt:
            return set((tt.getBestCmap() or {}).keys())
    except ImportError:  # fontTools reads WOFF2 only with the brotli package
        if path.suffix.lower() == ".woff2":
            return None
        raise
    except (TTLibError, OSError, AssertionError, KeyError, ValueError, struct.error) as e:
        raise FontError(f"{path}: not a readable TrueType/OpenType font ({e})") from e
    finally:
        log.setLevel(level)


def _check_face(path: Path, font: ImageFont.FreeTypeFont, charset: Charset) -> tuple[float, float]:
    """Raise FontError if ``font`` cannot write ``charset``; return its body and x-height ratios."""
    masks = {c: _mask(font, c) for c in charset.chars if c != " "}
    empty = [c for c, m in masks.items() if not m.any()]
    if empty:
        raise FontError(f"{path}: draws no ink for {''.join(empty)!r}")
    missing = _mask(font, _UNMAPPED)
    boxes = [c for c, m in masks.items() if missing.any() and _same_shape(m, missing)]
    if boxes:
        raise FontError(f"{path}: draws the missing-glyph box for {''.join(boxes)!r}")
    overlap = _caps_overlap(font)
    if overlap > _CAPS_OVERLAP:
        raise FontError(f"{path}: draws lowercase letters as capitals (shape overlap {overlap:.2f})")
    ratio = _caps_height_ratio(font)
    if ratio > _CAPS_HEIGHT:
        raise FontError(f"{path}: draws lowercase letters as capitals (as tall as them: height ratio {ratio:.2f})")
    _, top, _, bottom = font.getbbox("Hdgp", anchor="ls")
    x_top = font.getbbox("xzvnmwu", anchor="ls")[1]
    return (bottom - top) / _CHECK_SIZE, max(1, -x_top) / _CHECK_SIZE


def check_font(path: str | os.PathLike, charset: Charset = DEFAULT_CHARSET, *,
               family: str | None = None) -> list[FontSpec]:
    """The usable faces of one font file (one per named instance of a variable font), of ``family``
    (default: the font's own family name).

    Raises :class:`FontError` naming the file when it cannot be read or cannot write ``charset``.
    """
    path = Path(path)
    cmap = _cmap(path)
    missing = [c for c in charset.chars if c != " " and cmap is not None and ord(c) not in cmap]
    if missing:
        raise FontError(f"{path}: has no glyphs for {''.join(missing)!r}")
    try:
        font = ImageFont.truetype(str(path), _CHECK_SIZE)
    except OSError as e:
        raise FontError(f"{path}: not a readable TrueType/OpenType font ({e})") from e
    own_family, style = font.getname()
    family = slug(family or own_family or path.stem)
    try:
        variations = [v.decode() if isinstance(v, bytes) else str(v) for v in font.get_variation_names()]
    except OSError:  # not a variable font
        variations = []
    specs = []
    for variation in variations or [None]:  # type: ignore[list-item]  # None: the font as it is
        if variation is not None:
            font.set_variation_by_name(variation)
        body, xheight = _check_face(path, font, charset)
        name = f"{family}-{slug(variation or style or 'regular')}"
        specs.append(FontSpec(name, family, str(path), variation, body, xheight))
    return specs


# --- all fonts ------------------------------------------------------------------------------------------


def discover_fonts(fonts_dirs: Sequence[str | os.PathLike] = (), *, system: bool = True,
                   charset: Charset = DEFAULT_CHARSET) -> list[FontSpec]:
    """Every usable handwriting font: PyPI packages, Debian fonts and fontsource packages (when
    ``system``), then ``fonts_dirs``; each family from the first of these that has it. Unusable files
    are skipped with a warning; no usable font at all is an error. Cached per process (the fontsource
    folder is part of the key)."""
    fontsource = str(fontsource_root().resolve()) if system else ""
    key = (tuple(str(Path(d).resolve()) for d in fonts_dirs), system, charset.chars, fontsource)
    specs, skipped = _discover(*key)
    for message in skipped:
        warnings.warn(f"skipping font {message}", stacklevel=2)
    if not specs:
        where = ", ".join(key[0]) or "the fontpkg-* packages, Debian font folders or fontsource packages"
        raise FontError(f"no usable handwriting fonts found in {where}")
    return list(specs)


@lru_cache(maxsize=8)
def _discover(dirs: tuple[str, ...], system: bool, chars: str, fontsource: str
              ) -> tuple[tuple[FontSpec, ...], tuple[str, ...]]:
    # Each source: its files, and their family when it is known before opening them (fontsource).
    sources: list[tuple[list[Path], bool]] = []
    if system:
        sources += [(pypi_font_files(), False), (debian_font_files(), False),
                    (fontsource_font_files(fontsource), True)]
    sources += [(folder_font_files(d), False) for d in dirs]
    specs: dict[str, FontSpec] = {}
    skipped: list[str] = []
    taken: set[str] = set()  # families of the earlier sources
    for files, named in sources:
        found: set[str] = set()
        for f in files:
            family = fontsource_family(f) if named else None
            if family in taken:
                continue  # no need to open it
            try:
                faces = check_font(f, Charset(chars), family=family)
            except FontError as e:
                skipped.append(str(e))
                continue
            for spec in faces:
                if spec.family not in taken:
                    specs.setdefault(spec.name, spec)
                    found.add(spec.family)
        taken |= found
    return tuple(specs.values()), tuple(skipped)


def held_out_families(families: Iterable[str], fraction: float = HELD_OUT_FRACTION) -> set[str]:
    """About ``fraction`` of the families (at least one, never all of two or more), picked by hash."""
    fams = sorted(set(families), key=lambda f: hashlib.sha256(f.encode()).hexdigest())
    if len(fams) < 2:
        return set()
    k = min(len(fams) - 1, max(1, math.floor(fraction * len(fams) + 0.5)))
    return set(fams[:k])


def split_fonts(fonts: Sequence[FontSpec], fraction: float = HELD_OUT_FRACTION
                ) -> tuple[list[FontSpec], list[FontSpec]]:
    """(training fonts, held-out fonts); held out by whole family."""
    held = held_out_families((f.family for f in fonts), fraction)
    return [f for f in fonts if f.family not in held], [f for f in fonts if f.family in held]
