"""Pictures of lines: a grid of a line store's images with their texts, and of a model's worst readings.

Meant to be read at a glance by a person checking a dataset: are the images right side up, do the
texts match, do the splits and writers look sensible? Each cell shows, from the top: the line's index,
split, source and writer in small grey type; the image scaled to a common height inside a thin frame;
the transcription in a plain font.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from textrec.data.store import LineStore
from textrec.io import atomic_path

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
    return Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)


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


def save_pages(store_path: str | os.PathLike, out_png: str | os.PathLike, *, n: int = 4,
               split: str | None = None, seed: int = 0, width: int = 900) -> Path:
    """A PNG of ``n`` pages of a page store, each with its line boxes and line numbers drawn and its
    line texts beside it; written atomically."""
    from textrec.data.pages import PageStore

    if n < 1:
        raise ValueError(f"number of pages to show must be at least 1, got {n}")
    store = PageStore(store_path)
    ids = store.indices(split)
    if ids.size == 0:
        raise ValueError(f"{store.path}: no pages to show in split {split!r}")
    picked = sorted(np.random.default_rng(seed).choice(ids, min(n, ids.size), replace=False).tolist())
    panels = []
    font = _font(14)
    for i in picked:
        page = Image.fromarray(store.image(i)).convert("RGB")
        scale = min(1.0, width / page.width)
        page = page.resize((max(1, round(page.width * scale)), max(1, round(page.height * scale))))
        lines = store.lines(i)
        text_h = 18 * (len(lines) + 1)
        panel = Image.new("RGB", (width, page.height + text_h + PAD), "white")
        panel.paste(page, (0, 0))
        draw = ImageDraw.Draw(panel)
        for k, (box, text) in enumerate(lines, start=1):
            x0, y0, x1, y1 = (v * scale for v in box)
            draw.rectangle((x0, y0, x1, y1), outline=(220, 30, 30), width=2)
            draw.text((x0 + 2, y0 + 1), str(k), fill=(220, 30, 30), font=font)
            draw.text((4, page.height + 18 * k - 12), f"{k}. {text}", fill=INK, font=font)
        draw.text((4, page.height + 2), f"page {i} ({store.split(i)}, {store.writers[i]})", fill=INK, font=font)
        panels.append(panel)
    sheet = Image.new("RGB", (width, sum(p.height for p in panels) + PAD * len(panels)), "white")
    y = 0
    for panel in panels:
        sheet.paste(panel, (0, y))
        y += panel.height + PAD
    return _save_png(sheet, Path(out_png))


def save_prediction_grid(rows: Sequence[Any], out_png: str | os.PathLike, *, n: int = 12) -> Path:
    """A PNG of the ``n`` worst-read lines: each image with its truth and the model's reading beneath.

    ``rows`` are evaluation rows (``image``, ``truth``, ``prediction``, ``cer``); rows without an
    image are skipped.
    """
    shown = sorted((r for r in rows if r.image is not None), key=lambda r: r.cer, reverse=True)[:n]
    cell_h = LINE_HEIGHT + 2 * (TEXT_SIZE + 6) + PAD
    canvas = Image.new("RGB", (COLUMN_WIDTH + 2 * PAD, PAD + max(1, len(shown)) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for k, r in enumerate(shown):
        y = PAD + k * cell_h
        line = _scaled(np.asarray(r.image, dtype=np.uint8))
        canvas.paste(line.convert("RGB"), (PAD, y))
        truth, read = f"truth: {r.truth}", f"read:  {r.prediction}   (CER {r.cer:.0%})"
        y += LINE_HEIGHT + 4
        draw.text((PAD, y), truth, fill=INK, font=_fit_text(draw, truth, TEXT_SIZE, COLUMN_WIDTH))
        draw.text((PAD, y + TEXT_SIZE + 6), read, fill=(170, 0, 0) if r.cer > 0 else (0, 120, 0),
                  font=_fit_text(draw, read, TEXT_SIZE, COLUMN_WIDTH))
    return _save_png(canvas, Path(out_png))


def _save_png(image: Image.Image, path: Path) -> Path:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", optimize=True)
    return path
