"""Font sources: web fonts (.woff/.woff2), the fontsource package layout, one source per family, and
the checks that keep a font out."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from fontTools.pens.ttGlyphPen import TTGlyphPen
from fontTools.ttLib import TTFont

from textrec.data.fonts import (
    FONTSOURCE_ENV,
    FontError,
    check_font,
    discover_fonts,
    fontsource_font_files,
    fontsource_root,
    pypi_font_files,
    split_fonts,
)

LOWER = "abcdefghijklmnopqrstuvwxyz"


def _delius() -> Path:
    return next(p for p in pypi_font_files() if p.name.startswith("Delius"))


def _font(out: Path, edit: Callable[[dict[int, str]], None] = lambda cmap: None, *,
          flavor: str | None = None, glyphs: Callable[[TTFont], None] = lambda font: None,
          style: str | None = None) -> Path:
    """A copy of the installed Delius at ``out``, its character map changed by ``edit(cmap)``, its
    glyphs by ``glyphs(font)`` and its style name to ``style``, saved as ``flavor`` ("woff", or None
    for plain TrueType)."""
    font = TTFont(str(_delius()))
    for record in font["name"].names:
        if style and record.nameID in (2, 17):
            record.string = style
    for table in font["cmap"].tables:
        if table.isUnicode():
            edit(table.cmap)
    glyphs(font)
    font.flavor = flavor
    out.parent.mkdir(parents=True, exist_ok=True)
    font.save(str(out))
    return out


def _fontsource_package(root: Path, package: str, source: Path) -> Path:
    """``root/<package>/files/`` laid out as an npm @fontsource package: the latin 400 file, plus
    files of other subsets and weights that discovery must leave alone."""
    files = root / package / "files"
    files.mkdir(parents=True)
    for name in (f"{package}-latin-400-normal.woff", f"{package}-latin-700-normal.woff",
                 f"{package}-latin-ext-400-normal.woff", f"{package}-cyrillic-400-normal.woff"):
        shutil.copy(source, files / name)
    return files / f"{package}-latin-400-normal.woff"


def test_a_woff_font_is_read_and_measured_like_its_truetype_original(tmp_path: Path) -> None:
    woff = _font(tmp_path / "web" / "Delius.woff", flavor="woff")
    assert woff.read_bytes()[:4] == b"wOFF"
    [face] = check_font(woff)
    [original] = check_font(_delius())
    assert (face.name, face.family) == ("delius-regular", "delius")
    assert face.body == pytest.approx(original.body) and face.xheight == pytest.approx(original.xheight)
    found = discover_fonts([tmp_path / "web"], system=False)
    assert [f.path for f in found] == [str(woff)]


def test_fontsource_files_are_the_latin_400_file_of_each_package(tmp_path: Path) -> None:
    woff = _font(tmp_path / "Delius.woff", flavor="woff")
    root = tmp_path / "@fontsource"
    a = _fontsource_package(root, "my-hand", woff)
    b = _fontsource_package(root, "other-hand", woff)
    (root / "no-files").mkdir()
    assert fontsource_font_files(root) == [a, b]
    assert fontsource_font_files(tmp_path / "nowhere") == []


def test_fontsource_families_are_named_by_their_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "@fontsource"
    path = _fontsource_package(root, "my-hand", _font(tmp_path / "Delius.woff", flavor="woff"))
    monkeypatch.setenv(FONTSOURCE_ENV, str(root))
    assert fontsource_root() == root
    fonts = discover_fonts()
    mine = [f for f in fonts if f.family == "my-hand"]
    assert [(f.name, f.path) for f in mine] == [("my-hand-regular", str(path))]
    train, held = split_fonts(fonts)  # whole families on one side
    assert not {f.family for f in train} & {f.family for f in held}


def test_a_family_in_several_sources_is_used_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Other style names than PyPI's Delius Regular, so that only the family can tell them apart.
    woff = _font(tmp_path / "Delius.woff", flavor="woff", style="Bold")
    root = tmp_path / "@fontsource"
    _fontsource_package(root, "delius", woff)  # also on PyPI (fontpkg-delius)
    monkeypatch.setenv(FONTSOURCE_ENV, str(root))
    folder = tmp_path / "mine"
    _font(folder / "Delius-Copy.ttf", style="Italic")  # and once more in a fonts folder
    assert [f.name for f in discover_fonts([folder], system=False)] == ["delius-italic"]
    fonts = discover_fonts([folder])
    delius = [f for f in fonts if f.family == "delius"]
    assert [f.path for f in delius] == [str(_delius())]  # the first source's file, and only it
    assert len({f.name for f in fonts}) == len(fonts)
    monkeypatch.setenv(FONTSOURCE_ENV, str(tmp_path / "empty"))
    assert sorted(f.name for f in discover_fonts()) == sorted(f.name for f in fonts)


def test_a_web_font_missing_a_character_is_rejected_and_skipped_with_the_reason(tmp_path: Path) -> None:
    woff = _font(tmp_path / "web" / "noamp.woff", lambda cmap: cmap.pop(ord("&"), None), flavor="woff")
    with pytest.raises(FontError, match=r"noamp\.woff: has no glyphs for '&'"):
        check_font(woff)
    _font(tmp_path / "web" / "Delius.woff", flavor="woff")
    with pytest.warns(UserWarning, match=r"noamp\.woff: has no glyphs for '&'"):
        found = discover_fonts([tmp_path / "web"], system=False)
    assert [Path(f.path).name for f in found] == ["Delius.woff"]


def test_a_font_that_draws_boxes_for_characters_is_rejected(tmp_path: Path) -> None:
    def boxes(font: TTFont) -> None:  # a boxed missing glyph, and '&' and '#' drawn as it
        pen = TTGlyphPen(None)
        for x0, y0, x1, y1 in ((50, 0, 450, 700), (100, 650, 400, 50)):  # outer box, inner hole
            pen.moveTo((x0, y0))
            pen.lineTo((x0, y1))
            pen.lineTo((x1, y1))
            pen.lineTo((x1, y0))
            pen.closePath()
        box = pen.glyph()
        cmap = font.getBestCmap()
        for name in (".notdef", cmap[ord("&")], cmap[ord("#")]):
            font["glyf"][name] = copy.deepcopy(box)
            font["hmtx"][name] = (500, 50)

    with pytest.raises(FontError, match=r"boxes\.woff: draws the missing-glyph box for '#&'"):
        check_font(_font(tmp_path / "boxes.woff", glyphs=boxes, flavor="woff"))


def test_a_font_of_hand_drawn_capitals_only_is_rejected(tmp_path: Path) -> None:
    def other_capitals(cmap: dict[int, str]) -> None:  # a -> B, b -> C, ...: capitals unlike their own
        upper = {c: cmap[ord(c.upper())] for c in LOWER}
        for i, c in enumerate(LOWER):
            cmap[ord(c)] = upper[LOWER[(i + 1) % 26]]

    with pytest.raises(FontError, match=r"caps\.ttf: draws lowercase letters as capitals \(as tall"):
        check_font(_font(tmp_path / "caps.ttf", other_capitals))


def test_an_installed_fontsource_woff2_can_be_checked() -> None:
    woff2 = sorted(fontsource_root().glob("*/files/*-latin-400-normal.woff2"))
    if not woff2:
        pytest.skip(f"no fontsource packages in {fontsource_root()} (make fonts installs them)")
    faces = check_font(woff2[0], family="x")
    assert faces and all(f.family == "x" and f.body > 0 for f in faces)


def test_a_fonts_dir_of_only_unknown_files_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "font.pfb").write_bytes(b"type 1")
    with pytest.raises(FontError, match=r"no \.ttf, \.otf, \.woff or \.woff2 font files"):
        discover_fonts([tmp_path], system=False)
