"""Load a model artifact and read lines: image(s) in, text and confidence out.

Prediction, evaluation and the TorchServe handler all go through :class:`Recognizer`, so they share
the artifact's stem (the same preprocessing the model was trained with) and its chosen decoder.
Image files become grey through :func:`textrec.stem.to_grey`, the conversion the stem itself uses.
A line the stem finds no ink in (blank, uniform, transparent, noise only) reads as empty text with
confidence 0, on every path that goes through the Recognizer.

    rec = Recognizer.load("runs/cpu/model.pt")            # or s3://bucket/models/model.pt
    [r.text for r in rec.recognise(["line1.png", "line2.png"])]
    rec.recognise_page("page.jpg").text                   # a page: its lines found, read top to bottom

Pages go through :mod:`textrec.segment` first: the classical segmenter cuts the page into line crops
(each with its box on the page) and the line model reads the crops, all lines of a page in one batch.
A paragraph model (an artifact whose ``task`` is ``page``) reads each page whole instead, through its
page stem (:class:`textrec.models.paragraph.PageStem`), and its text is split into lines at the line
breaks it writes (:func:`split_page_reading`: each line's box is a band of the page, see there).
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from textrec.charset import LINE_BREAK, Charset
from textrec.decoding import CharNgramLM, DecoderSpec, Recognition, WordLM
from textrec.models.paragraph import PageStem
from textrec.segment import Box, SegmentConfig, segment_page
from textrec.stem import LineStem, is_blank, pad_images, to_grey

if TYPE_CHECKING:
    from textrec.models import LineModel

DEFAULT_MAX_PIXELS = 10_000_000
DEFAULT_MAX_PAGE_PIXELS = 40_000_000  # a 600 dpi A4 scan is ~35 M pixels

ImageInput = np.ndarray | Image.Image | str | os.PathLike | bytes


class ImageError(ValueError):
    """Bytes that are not a usable line image: not an image, empty, truncated, too large, odd mode."""


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, TIFF, ...) -> (H, W) uint8 grayscale.

    Raises :class:`ImageError` naming ``name`` for empty, non-image, truncated or oversized input
    and for modes that :func:`textrec.stem.to_grey` refuses (such as 32-bit float "F").
    """
    if not data:
        raise ImageError(f"{name}: empty input (0 bytes), expected an encoded image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} = {w * h} pixels is more than the limit of {max_pixels}")
            if w == 0 or h == 0:
                raise ImageError(f"{name}: image has no pixels ({w}x{h})")
            im.load()  # decodes now, so truncated files fail here rather than later
    except ImageError:
        raise
    except UnidentifiedImageError as e:
        raise ImageError(f"{name}: not an image (cannot identify the format of {len(data)} bytes)") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"{name}: too many pixels ({e})") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{name}: unreadable or truncated image ({e})") from e
    try:
        return to_grey(im, name)
    except ValueError as e:
        raise ImageError(str(e)) from e


def read_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A line image file -> (H, W) uint8; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such image file")
    return decode_image(p.read_bytes(), name=str(p), max_pixels=max_pixels)


# Line batches are padded to a multiple of this width: on CPU, oneDNN builds its kernels for each new
# input shape, so lines of ever new widths read ~1.6x slower than lines of a few widths (10 against
# 16 ms a line for the cpu recipe's model, one at a time). Line models mask the padding.
LINE_PAD_WIDTH_TO = 64


@dataclass(frozen=True)
class PageLine:
    """One line read on a page: its box (x0, y0, x1, y1 in page pixels, right/bottom exclusive)."""

    box: Box
    text: str
    confidence: float

    def to_json(self) -> dict[str, Any]:
        return {"box": [int(v) for v in self.box], "text": self.text, "confidence": round(float(self.confidence), 6)}


@dataclass(frozen=True)
class PageReading:
    """A page read: its lines top to bottom, and their texts joined by newlines."""

    text: str
    lines: list[PageLine]

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "lines": [line.to_json() for line in self.lines]}

    @property
    def confidence(self) -> float:
        """The lowest line confidence (0 for a page without lines): a page is as sure as its worst line."""
        return min((line.confidence for line in self.lines), default=0.0)


class Recognizer:
    """A model artifact, ready to read lines and pages."""

    def __init__(self, model: LineModel, info: dict[str, Any], *, device: str | torch.device = "cpu",
                 max_pixels: int = DEFAULT_MAX_PIXELS, max_page_pixels: int = DEFAULT_MAX_PAGE_PIXELS,
                 segment: SegmentConfig = SegmentConfig()) -> None:  # noqa: B008 (frozen, shared default)
        self.model = model.to(device).eval()
        self.info = info
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.max_page_pixels = max_page_pixels
        self.segment = segment
        self.charset = Charset(info["charset"])
        self.task = str(info.get("task", model.task))  # "page": a paragraph model, which reads pages whole
        self.stem = (PageStem if self.task == "page" else LineStem).from_dict(info["stem"])
        self.decoder = DecoderSpec.from_dict(info.get("decoder") or {})
        # A model that does not use an LM never gets one (older artifacts of such models may carry one).
        self.lm = _language_model(info, self.charset) if model.uses_lm else None

    @classmethod
    def load(cls, path_or_uri: str | os.PathLike, *, device: str | torch.device = "cpu",
             max_pixels: int = DEFAULT_MAX_PIXELS, max_page_pixels: int = DEFAULT_MAX_PAGE_PIXELS) -> Recognizer:
        """From a ``model.pt`` path, a run folder holding one, or an s3:// URI."""
        from textrec.artifact import load_artifact

        model, info = load_artifact(path_or_uri, map_location="cpu")
        return cls(model, info, device=device, max_pixels=max_pixels, max_page_pixels=max_page_pixels)

    def to_array(self, image: ImageInput, name: str = "image", max_pixels: int | None = None) -> np.ndarray | Image.Image:
        """Paths and bytes are decoded here; arrays and PIL images go to the stem as they are."""
        limit = max_pixels or self.max_pixels
        if isinstance(image, bytes | bytearray):
            return decode_image(bytes(image), name=name, max_pixels=limit)
        if isinstance(image, str | os.PathLike):
            return read_image(image, max_pixels=limit)
        if isinstance(image, np.ndarray | Image.Image):
            return image
        raise TypeError(f"{name}: expected an array, PIL image, path or bytes, got {type(image).__name__}")

    def preprocess(self, image: ImageInput, name: str = "image") -> torch.Tensor:
        return self.stem(self.to_array(image, name))

    @torch.inference_mode()
    def recognise_tensors(self, tensors: Sequence[torch.Tensor], batch_size: int = 16) -> list:
        """Stem outputs -> Recognitions, batched by width, returned in input order. A line with no ink
        (:func:`textrec.stem.is_blank`) is empty text at confidence 0 and never reaches the model."""
        out: list = [None] * len(tensors)
        for i, t in enumerate(tensors):
            if is_blank(t):
                out[i] = Recognition([], "", 0.0, [])
        order = sorted((i for i in range(len(tensors)) if out[i] is None), key=lambda i: tensors[i].shape[-1])
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            pad = LINE_PAD_WIDTH_TO if self.task == "line" else 1
            images, widths = pad_images([tensors[i] for i in idx], pad)
            results = self.model.recognise(images.to(self.device), widths.to(self.device), self.decoder,
                                           self.lm)
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    def recognise(self, images: Sequence[ImageInput], batch_size: int = 16) -> list:
        """Read each line image; results come back in the order of ``images``."""
        names = [str(im) if isinstance(im, str | os.PathLike) else f"image {i}" for i, im in enumerate(images)]
        tensors = [self.preprocess(im, name) for im, name in zip(images, names, strict=True)]
        return self.recognise_tensors(tensors, batch_size)

    def page_grey(self, image: ImageInput, name: str = "page") -> np.ndarray:
        """A page image of any accepted form -> (H, W) uint8 grey, under the page pixel limit."""
        return to_grey(self.to_array(image, name, self.max_page_pixels), name)

    def recognise_page(self, image: ImageInput, name: str = "page", batch_size: int = 16) -> PageReading:
        """Find the lines of a page (:mod:`textrec.segment`) and read them, top to bottom. A page with
        no ink has no lines and empty text."""
        return self.recognise_pages([image], [name], batch_size)[0]

    def recognise_pages(self, images: Sequence[ImageInput], names: Sequence[str] | None = None,
                        batch_size: int = 16) -> list[PageReading]:
        """Read each page; the lines of all pages are recognised in shared batches."""
        names = list(names) if names is not None else [
            str(im) if isinstance(im, str | os.PathLike) else f"page {i}" for i, im in enumerate(images)]
        if self.task == "page":
            return self._read_whole_pages(images, names, batch_size)
        crops = [segment_page(self.page_grey(im, nm), self.segment).lines
                 for im, nm in zip(images, names, strict=True)]
        tensors = [self.stem(c.image) for page in crops for c in page]
        results = iter(self.recognise_tensors(tensors, batch_size))
        pages = []
        for page in crops:
            read = [next(results) for _ in page]
            lines = [PageLine(c.box, r.text, float(r.confidence)) for c, r in zip(page, read, strict=True)]
            lines = [ln for ln in lines if ln.text.strip()]  # a crop the model reads as nothing is no line
            pages.append(PageReading("\n".join(ln.text for ln in lines), lines))
        return pages

    def _read_whole_pages(self, images: Sequence[ImageInput], names: Sequence[str],
                          batch_size: int) -> list[PageReading]:
        """A paragraph model reads each page whole (pages batched by width); its text splits into lines."""
        stem: PageStem = self.stem  # type: ignore[assignment]  # the task says so
        read = [stem.read(self.page_grey(im, nm)) for im, nm in zip(images, names, strict=True)]
        results = self.recognise_tensors([x for x, _ in read], batch_size)
        return [split_page_reading(r, box) for (_, box), r in zip(read, results, strict=True)]


def split_page_reading(rec: Recognition, box: Box) -> PageReading:
    """A paragraph model's reading of a page -> its lines, top to bottom, split at the line breaks.

    A line's confidence is the mean probability of its characters (the line break after it excluded);
    empty lines are dropped. The model writes text, not positions, so each line's box is a band of
    ``box`` (the page region the stem read: its ink): ``box`` cut into as many equal horizontal bands as
    there are lines. Where a line really lies, and how wide it is, is not known.

    >>> r = Recognition([1, 2, 3, 4, 5], "ab\\ncd", 0.7, [0.9, 0.7, 0.5, 0.6, 0.8])
    >>> [(ln.box, ln.text, round(ln.confidence, 2)) for ln in split_page_reading(r, (10, 0, 110, 40)).lines]
    [((10, 0, 110, 20), 'ab', 0.8), ((10, 20, 110, 40), 'cd', 0.7)]
    """
    probs = list(rec.char_confidences or [])
    if len(probs) != len(rec.text):  # no per-character confidences: every line gets the text's
        probs = [float(rec.confidence)] * len(rec.text)
    parts: list[tuple[str, list[float]]] = [("", [])]
    for ch, p in zip(rec.text, probs, strict=True):
        if ch == LINE_BREAK:
            parts.append(("", []))
        else:
            parts[-1] = (parts[-1][0] + ch, parts[-1][1] + [float(p)])
    kept = [(t.strip(), ps) for t, ps in parts if t.strip()]
    x0, y0, x1, y1 = box
    step = (y1 - y0) / max(1, len(kept))
    lines = [PageLine((x0, y0 + round(k * step), x1, y0 + round((k + 1) * step)), t, sum(ps) / len(ps))
             for k, (t, ps) in enumerate(kept)]
    return PageReading(LINE_BREAK.join(ln.text for ln in lines), lines)


def _language_model(info: dict[str, Any], charset: Charset) -> CharNgramLM | None:
    """The artifact's character LM with its word LM beside it (a word LM alone rides on a uniform one)."""
    lm = CharNgramLM.from_dict(info["lm"]) if info.get("lm") else None
    if info.get("word_lm"):
        lm = (lm or CharNgramLM.uniform(charset)).with_words(WordLM.from_dict(info["word_lm"]))
    return lm
