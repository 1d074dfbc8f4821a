"""A picture of a line store: a grid of line images, each with its text printed beneath it.

Meant to be read at a glance by a person checking a dataset: are the images right side up, do the
texts match, do the splits and writers look sensible? Each cell shows, from the top: the line's index,
split, source and writer in small grey type; the image scaled to a common height inside a thin frame;
the transcription in a plain font.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from textrec.data.store import LineStore

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LINE_HEIGHT = 56  # px of every line image in the grid
COLUMN_WIDTH = 880  # px; wider lines are scaled down to fit
PAD = 16
TEXT_SIZE, META_SIZE, TITLE_SIZE = 18, 12, 16
INK, GREY, FRAME = (20, 20, 20), (120, 120, 120), (200, 200, 200)


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    if DEJAVU.exists():
        return ImageFont.truetype(str(DEJAVU), size)
    return ImageFont.load_default(size)


def _fit_text(draw: ImageDraw.ImageDraw, text: str, size: int, width: int):
    """The largest font (down to 10 px) at which ``text`` fits in ``width`` pixels."""
    for s in range(size, 9, -1):
        font = _font(s)
        if draw.textlength(text, font=font) <= width:
            return font
    return _font(10)


def _scaled(image: np.ndarray) -> Image.Image:
    h, w = image.shape
    scale = min(LINE_HEIGHT / h, COLUMN_WIDTH / w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return Image.fromarray(image).resize(size, Image.LANCZOS)


def _cell(store: LineStore, i: int) -> Image.Image:
    meta_font = _font(META_SIZE)
    cell_h = META_SIZE + 4 + LINE_HEIGHT + 2 + 6 + TEXT_SIZE + 4
    cell = Image.new("RGB", (COLUMN_WIDTH + 2, cell_h), "white")
    draw = ImageDraw.Draw(cell)
    writer = store.writers[i] or "-"
    draw.text((0, 0), f"#{i}  {store.split(i)}  {store.source(i)}  {writer}", font=meta_font, fill=GREY)
    line = _scaled(store.image(i))
    y = META_SIZE + 4
    draw.rectangle((0, y, line.width + 1, y + line.height + 1), outline=FRAME)
    cell.paste(line.convert("RGB"), (1, y + 1))
    text = store.text(i)
    draw.text((0, y + line.height + 8), text, fill=INK, font=_fit_text(draw, text, TEXT_SIZE, COLUMN_WIDTH))
    return cell


def _pick(store: LineStore, n: int, split: str | None, seed: int) -> list[int]:
    idx = store.indices(split)
    if len(idx) > n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, size=n, replace=False))
    return [int(i) for i in idx]


def save_grid(store_path: str | os.PathLike, out_png: str | os.PathLike, *, n: int = 32,
              split: str | None = None, seed: int = 0) -> Path:
    """Write a PNG of ``n`` lines drawn at random (by ``seed``) from ``split`` (all splits when None).
    Returns the PNG's path; the file is written atomically."""
    if n < 1:
        raise ValueError(f"number of lines to show must be at least 1, got {n}")
    store = LineStore(store_path)
    picked = _pick(store, n, split, seed)
    if not picked:
        raise ValueError(f"{store.path}: no lines to show in split {split!r}")
    cells = [_cell(store, i) for i in picked]
    store.close()
    columns = 1 if len(cells) <= 12 else 2
    rows = -(-len(cells) // columns)
    cw, ch = cells[0].size
    title_h = TITLE_SIZE + 12
    grid = Image.new("RGB", (PAD + columns * (cw + PAD), title_h + PAD + rows * (ch + PAD)), "white")
    draw = ImageDraw.Draw(grid)
    per_split = store.info()["splits"]
    counts = ", ".join(f"{k} {per_split[k]}" for k in store.splits if k in per_split)
    title = (f"{store.path.name}: {len(store)} lines ({counts}); {len(cells)} shown, split {split or 'all'}; "
             f"hash {store.content_hash[:12]}")
    draw.text((PAD, PAD // 2), title, fill=INK, font=_fit_text(draw, title, TITLE_SIZE, grid.width - 2 * PAD))
    for k, cell in enumerate(cells):
        col, row = divmod(k, rows)
        grid.paste(cell, (PAD + col * (cw + PAD), title_h + PAD + row * (ch + PAD)))
    return _save_png(grid, Path(out_png))


def _save_png(image: Image.Image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        image.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
