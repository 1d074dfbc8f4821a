"""Synthetic handwritten pages, and the page store they are kept in.

A page is a paragraph written by one hand: lines of running text from the line synthesizer's text
source, each drawn by :class:`textrec.data.synth.LineRenderer` with the page's one font (or pen face),
then laid onto one sheet of paper the way people write: a left margin that wanders, an indented first
line, uneven line spacing (sometimes so tight that descenders touch the ascenders below), a ragged
right edge, a short last line, ruled or plain paper, shading and noise, and finally the whole sheet
slightly rotated and its lines slightly curved. Each line keeps its text and its box: the tight bounding
box of its own ink on the finished page (x0, y0, x1, y1, right and bottom exclusive), found from a
label map that goes through the same rotation and curvature as the pixels.

Layout of a page store (``format = "textrec-pages"``)::

    /pages/image   vlen uint8   pixels, row-major (ink dark, paper light)
    /pages/height, /pages/width  int32
    /pages/text    vlen utf-8   the page's line texts joined by "\\n"
    /pages/boxes   vlen int32   4 numbers per line, in the order of the text's lines
    /pages/split   uint8        index into attrs["splits"]; /pages/writer vlen utf-8 (font or IAM writer)
    attrs: format, version, charset, splits, meta (JSON), content_hash, n

Writes are atomic (a temporary file renamed into place), reads lazy, as for line stores.
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from PIL import Image

from textrec.charset import DEFAULT_CHARSET, Charset
from textrec.data.store import FORMAT_VERSION, PAGES_FORMAT, StoreError, _open_h5
from textrec.io import publish, temp_beside

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PageConfig:
    """Random ranges of the page layout (each drawn per page unless said otherwise)."""

    lines: tuple[int, int] = (3, 9)  # lines per page
    chars_per_line: tuple[int, int] = (24, 48)
    margin: tuple[float, float] = (0.3, 1.5)  # page margins, in line heights
    spacing: tuple[float, float] = (0.95, 1.6)  # baseline-to-baseline distance, in line-image heights
    touch_p: float = 0.25  # probability per line gap of writing so tight that lines touch (spacing 0.7-0.9)
    indent_p: float = 0.5  # probability of an indented first line
    wander: float = 0.3  # how far each line's start strays from the margin, in line heights
    skew: float = 2.5  # max |rotation| of the sheet in degrees
    curve: float = 0.15  # max baseline bow across the page, in line heights
    ruled_p: float = 0.2  # probability of ruled paper
    shading: float = 0.12  # max brightness falloff across the sheet
    noise: float = 4.0  # max std of sensor noise in grey levels
    scale: float = 1.0  # size of everything; tests render pages at 0.4-0.5

    def __post_init__(self) -> None:
        for name in ("lines", "chars_per_line", "margin", "spacing"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"PageConfig.{name} must be a range 0 < low <= high, got {(lo, hi)}")
        for name in ("touch_p", "indent_p", "ruled_p", "shading"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"PageConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("wander", "skew", "curve", "noise"):
            if getattr(self, name) < 0:
                raise ValueError(f"PageConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0.1 <= self.scale <= 4:
            raise ValueError(f"PageConfig.scale must be in [0.1, 4], got {self.scale}")

    @classmethod
    def from_mapping(cls, overrides: dict[str, Any]) -> PageConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"unknown page settings {unknown}; expected some of {sorted(known)}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
        return cls(**values)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Page:
    image: np.ndarray  # (H, W) uint8, ink dark
    lines: list[tuple[Box, str]]  # top to bottom
    writer: str = ""

    @property
    def text(self) -> str:
        return "\n".join(t for _, t in self.lines)


class PageRenderer:
    """Pages from a line renderer: ``render(rng)`` draws a paragraph from ``texts``, one hand per page."""

    def __init__(self, renderer: Any, texts: Any, config: PageConfig | None = None) -> None:
        self.renderer = renderer  # a textrec.data.synth.LineRenderer
        self.texts = texts  # a textrec.data.text.TextSource (or anything with .sample(rng) -> str)
        self.config = config or PageConfig()

    def paragraph(self, rng: np.random.Generator) -> list[str]:
        """Line texts that read on from one to the next, wrapped at a random width."""
        cfg = self.config
        n = int(rng.integers(cfg.lines[0], cfg.lines[1] + 1))
        width = int(rng.integers(cfg.chars_per_line[0], cfg.chars_per_line[1] + 1))
        words: list[str] = []
        lines: list[str] = []
        while len(lines) < n:
            if not words:
                words = self.texts.sample(rng).split()
                continue
            line = words.pop(0)
            while words and len(line) + 1 + len(words[0]) <= width:
                line += " " + words.pop(0)
            lines.append(line)
        if n > 1 and rng.random() < 0.5:  # a short last line ends the paragraph
            cut = lines[-1].split()
            lines[-1] = " ".join(cut[: max(1, len(cut) // 3)])
        return lines

    def render(self, rng: np.random.Generator, texts: Sequence[str] | None = None) -> Page:
        """One page of ``texts`` (default: a fresh paragraph), all in one hand."""
        cfg = self.config
        texts = list(texts) if texts is not None else self.paragraph(rng)
        if not texts or not all(t.strip() for t in texts):
            raise ValueError(f"a page needs non-empty lines, got {texts!r}")
        hand = one_hand(self.renderer, rng)
        drawn = []
        for text in texts:
            image, writer = hand.render(text, rng)
            if cfg.scale != 1.0:
                image = np.asarray(Image.fromarray(image).resize(
                    (max(1, round(image.shape[1] * cfg.scale)), max(1, round(image.shape[0] * cfg.scale))),
                    Image.Resampling.BILINEAR))
            drawn.append((_ink_alpha(image), writer))
        return self._compose(drawn, texts, rng)

    def _compose(self, drawn: list[tuple[np.ndarray, str]], texts: list[str], rng: np.random.Generator) -> Page:
        cfg = self.config
        line_h = float(np.median([a.shape[0] for a, _ in drawn]))
        margin = [int(rng.uniform(*cfg.margin) * line_h) + 2 for _ in range(4)]  # top, right, bottom, left
        xs, ys, y = [], [], float(margin[0])
        for k, (alpha, _) in enumerate(drawn):
            indent = rng.uniform(1.0, 2.5) * line_h if k == 0 and rng.random() < cfg.indent_p else 0.0
            xs.append(int(margin[3] + indent + rng.uniform(0, cfg.wander) * line_h))
            ys.append(int(y))
            tight = rng.random() < cfg.touch_p
            y += alpha.shape[0] * (rng.uniform(0.7, 0.9) if tight else rng.uniform(*cfg.spacing))
        width = max(x + a.shape[1] for x, (a, _) in zip(xs, drawn, strict=True)) + margin[1]
        height = max(yy + a.shape[0] for yy, (a, _) in zip(ys, drawn, strict=True)) + margin[2]
        ink = np.zeros((height, width), np.float32)
        label = np.zeros((height, width), np.int32)
        for k, ((alpha, _), x, yy) in enumerate(zip(drawn, xs, ys, strict=True), start=1):
            h, w = alpha.shape
            region = ink[yy:yy + h, x:x + w]
            np.maximum(region, alpha, out=region)
            label[yy:yy + h, x:x + w][alpha > 0.35] = k
        ink, label = self._bend(ink, label, rng, line_h)
        image = self._paper(ink, rng, line_h)
        boxes = _boxes(label, len(drawn))
        lines = [(box, text) for box, text in zip(boxes, texts, strict=True) if box is not None]
        return Page(image, lines, drawn[0][1])

    def _bend(self, ink: np.ndarray, label: np.ndarray, rng: np.random.Generator,
              line_h: float) -> tuple[np.ndarray, np.ndarray]:
        """A slight bow of every line across the page, then the sheet's rotation."""
        cfg = self.config
        bow = rng.uniform(-cfg.curve, cfg.curve) * line_h
        if abs(bow) >= 1:
            h, w = ink.shape
            pad = int(math.ceil(abs(bow)))
            shift = np.rint(bow * np.sin(np.linspace(0, math.pi, w))).astype(int) + pad
            bent_ink = np.zeros((h + 2 * pad, w), np.float32)
            bent_label = np.zeros((h + 2 * pad, w), np.int32)
            for x in range(w):
                bent_ink[shift[x]:shift[x] + h, x] = ink[:, x]
                bent_label[shift[x]:shift[x] + h, x] = label[:, x]
            ink, label = bent_ink, bent_label
        angle = rng.uniform(-cfg.skew, cfg.skew)
        if abs(angle) >= 0.05:
            ink = np.asarray(Image.fromarray(ink, mode="F").rotate(angle, Image.Resampling.BILINEAR, expand=True))
            label = np.asarray(Image.fromarray(label, mode="I").rotate(angle, Image.Resampling.NEAREST,
                                                                       expand=True)).astype(np.int32)
        return ink, label

    def _paper(self, ink: np.ndarray, rng: np.random.Generator, line_h: float) -> np.ndarray:
        """Ink onto one sheet: paper tone with shading across it, optional rules, ink tone, noise."""
        cfg = self.config
        h, w = ink.shape
        paper = rng.uniform(215, 250)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        direction = rng.uniform(0, 2 * math.pi)
        ramp = (math.cos(direction) * xx / max(w, 1) + math.sin(direction) * yy / max(h, 1))
        sheet = paper * (1 - rng.uniform(0, cfg.shading) * (ramp - ramp.min()) / max(float(np.ptp(ramp)), 1e-6))
        if rng.random() < cfg.ruled_p:
            gap = max(4, int(line_h * rng.uniform(0.95, 1.2)))
            for r in range(int(rng.integers(0, gap)), h, gap):
                sheet[r:r + max(1, round(cfg.scale))] -= rng.uniform(25, 60)
        ink_tone = rng.uniform(10, 80)
        out = sheet * (1 - ink) + ink_tone * ink
        out += rng.normal(0, rng.uniform(0, cfg.noise), out.shape).astype(np.float32)
        return np.clip(out, 0, 255).astype(np.uint8)


def one_hand(renderer: Any, rng: np.random.Generator) -> Any:
    """A line renderer that writes like one person: one font style, or (with the renderer's ``pen_p``)
    one pen face, for every line of a page. Sizes, slant and spacing still vary a little per line."""
    from dataclasses import replace

    from textrec.data.synth import LineRenderer

    cfg = renderer.config
    # On a page the neighbours are real lines and the rules are the sheet's: no line draws its own.
    page_cfg = replace(cfg, neighbour_p=0.0, rule_p=0.0)
    families = renderer._families  # noqa: SLF001 (the renderer's own family-first draw)
    styles = families[int(rng.integers(len(families)))]
    spec = styles[int(rng.integers(len(styles)))]
    pen_families = renderer.pen._families  # noqa: SLF001
    if cfg.pen_p > 0 and pen_families and rng.random() < cfg.pen_p:
        faces = pen_families[int(rng.integers(len(pen_families)))]
        face = faces[int(rng.integers(len(faces)))]
        return LineRenderer(replace(page_cfg, pen_p=1.0), [spec], [face])  # the font where the pen cannot
    return LineRenderer(replace(page_cfg, pen_p=0.0), [spec], [])


def _ink_alpha(image: np.ndarray) -> np.ndarray:
    """A rendered line (ink dark on its own paper) -> ink coverage in [0, 1]."""
    grey = image.astype(np.float32)
    paper = float(np.percentile(grey, 75))
    ink = float(np.percentile(grey, 0.5))
    span = max(paper - ink, 1.0)
    return np.clip((paper - grey) / span, 0.0, 1.0) * (grey < paper - 0.15 * span)


def _boxes(label: np.ndarray, n: int) -> list[Box | None]:
    out: list[Box | None] = []
    for k in range(1, n + 1):
        ys, xs = np.nonzero(label == k)
        out.append(None if ys.size == 0 else (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))
    return out


# ---------------------------------------------------------------------------------------------------
# The page store


class PageWriter:
    """Write a page store atomically; use as a context manager."""

    def __init__(self, path: str | os.PathLike, *, charset: Charset | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.charset = charset or DEFAULT_CHARSET
        self.meta = dict(meta or {})
        self.splits: list[str] = []
        self._hash = hashlib.sha256()
        self._tmp = temp_beside(self.path)
        self._rows: list[tuple[np.ndarray, str, np.ndarray, str, str]] = []

    def __enter__(self) -> PageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(self, page: Page, *, split: str) -> None:
        image = np.ascontiguousarray(page.image)
        if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
            raise ValueError(f"page image must be a non-empty 2-D uint8 array, got {image.dtype} {image.shape}")
        h, w = image.shape
        for (x0, y0, x1, y1), text in page.lines:
            if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
                raise ValueError(f"line box {(x0, y0, x1, y1)} of {text!r} is not inside the {w}x{h} page")
            self.charset.encode(text, normalise=False)  # names the text on an unknown character
        if split not in self.splits:
            self.splits.append(split)
        boxes = np.array([b for b, _ in page.lines], np.int32).reshape(-1)
        for part in (str(image.shape).encode(), image.tobytes(), page.text.encode(), boxes.tobytes(), split.encode()):
            self._hash.update(len(part).to_bytes(8, "little"))
            self._hash.update(part)
        self._rows.append((image, page.text, boxes, split, page.writer))

    def close(self) -> Path:
        try:
            with h5py.File(self._tmp, "w") as f:
                g = f.create_group("pages")
                n = len(self._rows)
                vb, vi, vs = h5py.vlen_dtype(np.uint8), h5py.vlen_dtype(np.int32), h5py.string_dtype("utf-8")
                cols = {"image": (vb, [r[0].ravel() for r in self._rows]),
                        "boxes": (vi, [r[2] for r in self._rows]),
                        "height": (np.int32, [r[0].shape[0] for r in self._rows]),
                        "width": (np.int32, [r[0].shape[1] for r in self._rows]),
                        "text": (vs, [r[1] for r in self._rows]),
                        "split": (np.uint8, [self.splits.index(r[3]) for r in self._rows]),
                        "writer": (vs, [r[4] for r in self._rows])}
                for name, (dt, values) in cols.items():
                    ds = g.create_dataset(name, shape=(n,), dtype=dt)
                    for i, v in enumerate(values):  # one by one: h5py reads equal-length rows as 2-D
                        ds[i] = v
                f.attrs.update(format=PAGES_FORMAT, version=FORMAT_VERSION, charset=self.charset.chars,
                               splits=json.dumps(self.splits), meta=json.dumps(self.meta, sort_keys=True, default=str),
                               content_hash=self._hash.hexdigest(), n=n)
            publish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        self._tmp.unlink(missing_ok=True)


class PageStore:
    """Read a page store lazily; picklable (each process opens its own handle)."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        try:
            f = _open_h5(self.path, PAGES_FORMAT)
        except StoreError as e:
            raise StoreError(f"{e} (a page store is written by `textrec data synth --pages`)") from e
        with f:
            a = f.attrs
            self.charset = Charset(str(a["charset"]))
            self.splits: list[str] = json.loads(a["splits"])
            self.meta: dict[str, Any] = json.loads(a["meta"])
            self.content_hash = str(a["content_hash"])
            g = f["pages"]
            self.heights, self.widths, self.split_codes = g["height"][:], g["width"][:], g["split"][:]
            self.texts = [t.decode() if isinstance(t, bytes) else t for t in g["text"][:]]
            self.writers = [t.decode() if isinstance(t, bytes) else t for t in g["writer"][:]]
            self._boxes = [np.asarray(b, np.int32).reshape(-1, 4) for b in g["boxes"][:]]
        self._f: h5py.File | None = None
        self._pid = -1

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_f"], state["_pid"] = None, -1
        return state

    def __len__(self) -> int:
        return len(self.texts)

    def image(self, i: int) -> np.ndarray:
        if self._f is None or self._pid != os.getpid():
            self._f, self._pid = _open_h5(self.path, PAGES_FORMAT), os.getpid()
        flat = self._f["pages/image"][i]
        return np.asarray(flat, np.uint8).reshape(int(self.heights[i]), int(self.widths[i]))

    def text(self, i: int) -> str:
        return self.texts[i]

    def lines(self, i: int) -> list[tuple[Box, str]]:
        texts = self.texts[i].split("\n")
        return [(tuple(int(v) for v in b), t) for b, t in zip(self._boxes[i], texts, strict=True)]  # type: ignore[misc]

    def split(self, i: int) -> str:
        return self.splits[self.split_codes[i]]

    def indices(self, split: str | None = None) -> np.ndarray:
        if split is None:
            return np.arange(len(self))
        if split not in self.splits:
            raise KeyError(f"{self.path}: no split {split!r}; it has {self.splits}")
        return np.flatnonzero(self.split_codes == self.splits.index(split))

    def info(self) -> dict[str, Any]:
        return {"path": str(self.path), "n": len(self), "kind": "pages",
                "splits": dict(Counter(self.splits[c] for c in self.split_codes)),
                "lines": int(sum(len(b) for b in self._boxes)), "charset": self.charset.chars,
                "content_hash": self.content_hash, "meta": self.meta}


# ---------------------------------------------------------------------------------------------------
# Rendering many pages


_WORKER: dict[str, Any] = {}


def _init(seed: int, renderers: dict[str, PageRenderer]) -> None:
    _WORKER.update(seed=seed, renderers=renderers)


def _render(job: tuple[int, str]) -> Page:
    i, which = job
    return _WORKER["renderers"][which].render(np.random.default_rng([_WORKER["seed"], i]))


def synthesize_pages(n: int, out: str | os.PathLike, *, seed: int = 0, fonts_dirs: Sequence[Path] = (),
                     workers: int | None = None, corpus: str | os.PathLike | None = None, config: Any = None,
                     page_config: PageConfig | None = None, progress: bool = True) -> Path:
    """Render ``n`` pages into the page store ``out``: splits as for synthetic lines, the
    ``test_unseen_font`` pages in held-out font families. The content depends on the seed and
    settings, never on ``workers`` (page i draws from the generator of ``(seed, i)``)."""
    from tqdm import tqdm

    from textrec.data.fonts import discover_fonts, split_fonts
    from textrec.data.pen import split_pen_faces
    from textrec.data.synth import LineRenderer, SynthConfig, default_workers, split_plan
    from textrec.data.text import open_text_source

    if n < 1:
        raise ValueError(f"number of pages must be at least 1, got {n}")
    config = config or SynthConfig()
    page_config = page_config or PageConfig()
    train_fonts, held_out = split_fonts(discover_fonts(fonts_dirs))
    source = open_text_source(corpus, charset=DEFAULT_CHARSET)
    train_faces, held_faces = split_pen_faces()
    renderers = {"train": PageRenderer(LineRenderer(config, train_fonts, train_faces), source, page_config),
                 "held_out": PageRenderer(LineRenderer(config, held_out, held_faces), source, page_config)}
    plan = split_plan(n, seed)
    jobs = [(i, "held_out" if s == "test_unseen_font" else "train") for i, s in enumerate(plan)]
    meta = {"generator": "textrec.data.pages", "seed": seed, "n": n, "config": asdict(config),
            "page_config": asdict(page_config), "corpus": source.describe()}
    workers = max(1, min(workers or default_workers(), n))
    with PageWriter(out, meta=meta) as writer, tqdm(total=n, unit="page", desc="pages", disable=not progress) as bar:
        if workers == 1:
            _init(seed, renderers)
            pages = map(_render, jobs)
            for i, page in enumerate(pages):
                writer.add(page, split=plan[i])
                bar.update()
        else:
            with mp.get_context("spawn").Pool(workers, initializer=_init, initargs=(seed, renderers)) as pool:
                for i, page in enumerate(pool.imap(_render, jobs, chunksize=4)):
                    writer.add(page, split=plan[i])
                    bar.update()
    return Path(out)
