"""Handwriting fonts: find them, check them, name them, and hold some out.

Fonts come from three places, in this order (the first font of a given name wins):

1. the installed PyPI ``fontpkg-*`` packages (each ships ``fontpkg_<family>/files/*.ttf``);
2. the Debian handwriting font packages, when installed (:data:`DEBIAN_FONTS`, below ``/usr/share/fonts``);
3. any folders passed as ``fonts_dirs`` (searched recursively for ``.ttf``/``.otf``).

Each font file, and each named instance of a variable font (Caveat's Regular and Bold, say), becomes
one :class:`FontSpec` with a stable name such as ``caveat-bold``. A font is used only if it can write
the whole charset: every character must be in its character map and draw some ink, and its lowercase
letters must not be capitals (capitals-only fonts and fonts that draw lowercase as small capitals are
useless for learning lowercase). A font file that fails a check is skipped with a warning that names
the file and the reason; a ``fonts_dirs`` entry that is not a folder, or holds no font files at all, is
an error.

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

FONT_SUFFIXES = (".ttf", ".otf")
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
)
HELD_OUT_FRACTION = 0.2
_CHECK_SIZE = 64
# Letters whose lowercase differs in shape from the capital; a median overlap above this means the
# font draws them as (small) capitals. Real hands score 0.15-0.65, capitals-only fonts 0.9+.
_CAPS_LETTERS = "abdeghnqrt"
_CAPS_OVERLAP = 0.8


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


def folder_font_files(folder: str | os.PathLike) -> list[Path]:
    """Every ``.ttf``/``.otf`` below ``folder``; an error if it is not a folder or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FontError(f"{folder}: fonts folder does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in FONT_SUFFIXES and p.is_file())
    if not files:
        raise FontError(f"{folder}: no .ttf or .otf font files in this folder")
    return files


# --- checking one font file ------------------------------------------------------------------------


def _mask(font: ImageFont.FreeTypeFont, text: str) -> np.ndarray:
    m = font.getmask(text)
    return np.asarray(m, dtype=np.uint8).reshape(m.size[1], m.size[0])


def _caps_overlap(font: ImageFont.FreeTypeFont) -> float:
    """Median overlap (IoU) of lowercase and capital letter shapes, each scaled to the same box."""
    def shape(c: str) -> np.ndarray:
        return np.asarray(Image.fromarray(_mask(font, c)).resize((24, 24), Image.Resampling.BILINEAR)) > 96

    ious = []
    for c in _CAPS_LETTERS:
        a, b = shape(c), shape(c.upper())
        ious.append((a & b).sum() / max(1, (a | b).sum()))
    return float(np.median(ious))


def _cmap(path: Path) -> set[int]:
    from fontTools.ttLib import TTFont, TTLibError

    log = logging.getLogger("fontTools")
    level = log.level
    log.setLevel(logging.ERROR)  # harmless table quirks of old fonts would flood the console
    try:
        with TTFont(str(path), lazy=True, fontNumber=0) as tt:
            return set((tt.getBestCmap() or {}).keys())
    except (TTLibError, OSError, AssertionError, KeyError, ValueError, struct.error) as e:
        raise FontError(f"{path}: not a readable TrueType/OpenType font ({e})") from e
    finally:
        log.setLevel(level)


def _check_face(path: Path, font: ImageFont.FreeTypeFont, charset: Charset) -> tuple[float, float]:
    """Raise FontError if ``font`` cannot write ``charset``; return its body and x-height ratios."""
    empty = [c for c in charset.chars if c != " " and not _mask(font, c).any()]
    if empty:
        raise FontError(f"{path}: draws no ink for {''.join(empty)!r}")
    overlap = _caps_overlap(font)
    if overlap > _CAPS_OVERLAP:
        raise FontError(f"{path}: draws lowercase letters as capitals (shape overlap {overlap:.2f})")
    _, top, _, bottom = font.getbbox("Hdgp", anchor="ls")
    x_top = font.getbbox("xzvnmwu", anchor="ls")[1]
    return (bottom - top) / _CHECK_SIZE, max(1, -x_top) / _CHECK_SIZE


def check_font(path: str | os.PathLike, charset: Charset = DEFAULT_CHARSET) -> list[FontSpec]:
    """The usable faces of one font file (one per named instance of a variable font).

    Raises :class:`FontError` naming the file when it cannot be read or cannot write ``charset``.
    """
    path = Path(path)
    cmap = _cmap(path)
    missing = [c for c in charset.chars if c != " " and ord(c) not in cmap]
    if missing:
        raise FontError(f"{path}: has no glyphs for {''.join(missing)!r}")
    try:
        font = ImageFont.truetype(str(path), _CHECK_SIZE)
    except OSError as e:
        raise FontError(f"{path}: not a readable TrueType/OpenType font ({e})") from e
    family, style = font.getname()
    try:
        variations = [v.decode() if isinstance(v, bytes) else str(v) for v in font.get_variation_names()]
    except OSError:  # not a variable font
        variations = []
    specs = []
    for variation in variations or [None]:  # type: ignore[list-item]  # None: the font as it is
        if variation is not None:
            font.set_variation_by_name(variation)
        body, xheight = _check_face(path, font, charset)
        name = f"{slug(family or path.stem)}-{slug(variation or style or 'regular')}"
        specs.append(FontSpec(name, slug(family or path.stem), str(path), variation, body, xheight))
    return specs


# --- all fonts ------------------------------------------------------------------------------------------


def discover_fonts(fonts_dirs: Sequence[str | os.PathLike] = (), *, system: bool = True,
                   charset: Charset = DEFAULT_CHARSET) -> list[FontSpec]:
    """Every usable handwriting font: PyPI packages and Debian fonts (when ``system``), then
    ``fonts_dirs``. Unusable files are skipped with a warning; no usable font at all is an error."""
    key = (tuple(str(Path(d).resolve()) for d in fonts_dirs), system, charset.chars)
    specs, skipped = _discover(*key)
    for message in skipped:
        warnings.warn(f"skipping font {message}", stacklevel=2)
    if not specs:
        where = ", ".join(key[0]) or "the fontpkg-* packages or Debian font folders"
        raise FontError(f"no usable handwriting fonts found in {where}")
    return list(specs)


@lru_cache(maxsize=8)
def _discover(dirs: tuple[str, ...], system: bool, chars: str) -> tuple[tuple[FontSpec, ...], tuple[str, ...]]:
    files: list[Path] = []
    if system:
        files += pypi_font_files() + debian_font_files()
    for d in dirs:
        files += folder_font_files(d)
    specs: dict[str, FontSpec] = {}
    skipped: list[str] = []
    for f in files:
        try:
            faces = check_font(f, Charset(chars))
        except FontError as e:
            skipped.append(str(e))
            continue
        for spec in faces:
            specs.setdefault(spec.name, spec)
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
