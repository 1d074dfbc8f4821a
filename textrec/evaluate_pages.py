"""Score page recognition: page CER and WER, line-count errors, and an HTML report with the boxes drawn.

Labelled pages come from a TSV of ``image path<TAB>text`` rows whose text holds the page's lines
joined by a literal ``\\n`` (two characters, so a row stays one line of the file), paths relative to
the TSV's folder, or from a page store split (:mod:`textrec.data.pages`).

Page CER compares the page's text with its lines joined by newlines on both sides, so a missed or
split line costs its characters plus a line break; WER is over the same texts. The line count of a
page is right when the segmenter found as many lines as the truth has (with a paragraph model, an
artifact of task ``page``: when the model wrote as many lines; see :class:`textrec.recognizer.Recognizer`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from textrec.evaluate import REPORT_STYLE, EvalDataError, log_real_val, tsv_rows
from textrec.io import atomic_write
from textrec.metrics import cer as cer_score
from textrec.metrics import line_cer
from textrec.metrics import wer as wer_score
from textrec.recognizer import DEFAULT_MAX_PAGE_PIXELS, PageReading, Recognizer, read_image

PageSample = tuple[np.ndarray, list[str], str]  # (page image, truth lines, name)
LINE_BREAK = "\\n"  # how a TSV row writes the break between two lines of a page


@dataclass
class PageRow:
    name: str
    truth: list[str]
    reading: PageReading
    cer: float
    image: np.ndarray | None = None

    @property
    def line_count_error(self) -> int:
        return len(self.reading.lines) - len(self.truth)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "truth": "\n".join(self.truth), "cer": round(self.cer, 5),
                "lines_true": len(self.truth), "lines_found": len(self.reading.lines), **self.reading.to_json()}


@dataclass
class PageReport:
    cer: float
    wer: float
    n: int
    rows: list[PageRow] = field(default_factory=list)
    source: str = ""
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        errors = [r.line_count_error for r in self.rows]
        return {"cer": self.cer, "wer": self.wer, "n": self.n, "source": self.source,
                "lines_true": sum(len(r.truth) for r in self.rows),
                "lines_found": sum(len(r.reading.lines) for r in self.rows),
                "line_count_exact": sum(e == 0 for e in errors),
                "line_count_mae": float(np.mean(np.abs(errors))) if errors else 0.0,
                "pages_per_s": self.n / self.seconds if self.seconds > 0 else 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "rows": [r.to_dict() for r in self.rows]}


def split_page_text(text: str) -> list[str]:
    r"""A TSV page text -> its lines (``\n`` written as two characters, or a real newline).

    >>> split_page_text("first line\\nsecond line")
    ['first line', 'second line']
    """
    return [ln for ln in text.replace(LINE_BREAK, "\n").split("\n")]


def tsv_pages(tsv_path: str | os.PathLike) -> Iterator[PageSample]:
    """The (page, truth lines, name) of a page TSV, read one at a time; errors name the TSV and file."""
    for path, truth, name in tsv_rows(tsv_path):
        try:
            image = read_image(path, max_pixels=DEFAULT_MAX_PAGE_PIXELS)
        except ValueError as e:
            raise EvalDataError(f"{tsv_path}: {e}") from e
        yield image, split_page_text(truth), name


def evaluate_pages(recognizer: Recognizer | str | os.PathLike, pages: Iterable[PageSample], *,
                   source: str = "", keep_images: int = 50) -> PageReport:
    """Find and read the lines of every page and score the page texts."""
    import time

    rec = recognizer if isinstance(recognizer, Recognizer) else Recognizer.load(recognizer)
    rows: list[PageRow] = []
    seconds = 0.0
    for image, truth, name in pages:
        t0 = time.perf_counter()
        reading = rec.recognise_page(image, name)
        seconds += time.perf_counter() - t0
        lines = [rec.charset.normalise(t) for t in truth]
        rows.append(PageRow(name, lines, reading, line_cer(reading.text, "\n".join(lines)),
                            image if len(rows) < keep_images else None))
    if not rows:
        raise EvalDataError(f"{source or 'page evaluation'}: no labelled pages to evaluate")
    preds = [r.reading.text for r in rows]
    truths = ["\n".join(r.truth) for r in rows]
    return PageReport(cer_score(preds, truths), wer_score(preds, truths), len(rows), rows, source, seconds)


def store_pages(store_path: str | os.PathLike, split: str = "test") -> Iterator[PageSample]:
    """The (page, truth lines, name) of one split of a page store."""
    from textrec.data.pages import PageStore

    store = PageStore(store_path)
    for i in store.indices(split):
        yield store.image(int(i)), store.text(int(i)).split("\n"), f"page {int(i)}"


def evaluate_page_tsv(model: Recognizer | str | os.PathLike, tsv_path: str | os.PathLike) -> PageReport:
    return evaluate_pages(model, tsv_pages(tsv_path), source=str(tsv_path))


def evaluate_page_source(model: Recognizer | str | os.PathLike, source: str | os.PathLike,
                         split: str = "test") -> PageReport:
    """Score a page TSV, or one split of a page store (``.h5``)."""
    if str(source).endswith((".h5", ".hdf5")):
        return evaluate_pages(model, store_pages(source, split), source=f"{source} [{split}]")
    return evaluate_page_tsv(model, source)


def draw_boxes(image: np.ndarray, reading: PageReading, max_width: int = 1000) -> Image.Image:
    """The page in colour with each found line's box and number drawn on it, at most ``max_width`` wide."""
    page = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
    scale = min(1.0, max_width / page.width)
    if scale < 1.0:
        page = page.resize((max(1, round(page.width * scale)), max(1, round(page.height * scale))),
                           Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(page)
    for k, line in enumerate(reading.lines, start=1):
        x0, y0, x1, y1 = (v * scale for v in line.box)
        draw.rectangle((x0, y0, x1, y1), outline=(220, 30, 30), width=2)
        draw.text((x0 + 2, y0 + 1), str(k), fill=(220, 30, 30))
    return page


def _png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_page_html(report: PageReport) -> str:
    s = report.summary()
    e = html.escape
    parts = []
    for r in sorted(report.rows, key=lambda r: r.cer, reverse=True):
        img = (f'<img alt="{e(r.name)}" src="data:image/png;base64,{_png(draw_boxes(r.image, r.reading))}">'
               if r.image is not None else "<em>image not kept</em>")
        found = "".join(f"<tr><td class=num>{k}</td><td class=mono>{e(ln.text)}</td>"
                        f"<td class=num>{ln.confidence:.2f}</td></tr>" for k, ln in enumerate(r.reading.lines, 1))
        truth = "".join(f"<div class=mono>{e(t)}</div>" for t in r.truth)
        parts.append(f"<h3>{e(r.name)}: CER {r.cer:.1%}, lines {len(r.reading.lines)} found / {len(r.truth)} "
                     f"true</h3>{img}<table><tr><th>#</th><th>read</th><th>conf</th></tr>{found}</table>"
                     f"<p><b>truth</b></p>{truth}")
    return (f"<!doctype html><html><head><meta charset=utf-8><title>textrec page evaluation</title>"
            f"<style>{REPORT_STYLE}</style></head><body><h1>Pages: {e(report.source or 'pages')}</h1>"
            f"<p>{report.n} pages &middot; CER <b>{report.cer:.2%}</b> &middot; WER <b>{report.wer:.2%}</b>"
            f" &middot; line count exact on {s['line_count_exact']} of {report.n} pages "
            f"({s['lines_found']} lines found, {s['lines_true']} true) &middot; "
            f"{s['pages_per_s']:.2f} pages/s</p>{''.join(parts)}</body></html>")


def write_page_report(report: PageReport, out_dir: str | os.PathLike) -> Path:
    """``out_dir/report.html`` (each page with its boxes, read lines and truth) and ``report.json``."""
    out = Path(out_dir)
    atomic_write(out / "report.json", json.dumps(report.to_dict(), indent=2))
    path = out / "report.html"
    atomic_write(path, render_page_html(report))
    return path


# --- the pipeline's evaluate step for page models -------------------------------------------------


def page_set_hash(store_path: str | os.PathLike, split: str = "test") -> str:
    """What identifies the pages one split of a page store holds: its content hash and the split."""
    import hashlib

    from textrec.data.pages import PageStore

    return hashlib.sha256(f"{PageStore(store_path).content_hash}:{split}".encode()).hexdigest()


def evaluate_page_split(model_pt: str | os.PathLike, page_store: str | os.PathLike, out_dir: str | os.PathLike,
                        *, step: Any = None, real_val: str = "") -> dict[str, Any]:
    """The evaluate step of a page model (``task: page``): page CER/WER on the test split of
    ``page_store`` and its HTML report (boxes drawn) in ``out_dir``, logged to the step's MLflow run;
    with ``real_val`` (a page TSV) that set too, under ``out_dir/real_val``. Returns what
    :func:`textrec.evaluate.evaluate_split` returns for lines, with page scores: ``cer``, ``wer``,
    ``n``, ``eval_set_hash``, ``report``, ``line_count_exact`` and the ``real_val_*`` ones."""
    import hashlib

    import mlflow

    from textrec import tracking

    step = step or tracking.StepTracking()
    eval_hash = page_set_hash(page_store)
    if real_val:  # a bad source fails before anything is logged
        real = list(tsv_pages(real_val))
        digest = hashlib.sha256()
        for image, truth, _ in real:
            digest.update(np.ascontiguousarray(image).tobytes())
            digest.update("\n".join(truth).encode())
        real_hash = digest.hexdigest()
    tags = {tracking.TAG_EVAL_SET: eval_hash, **({tracking.TAG_REAL_VAL_SET: real_hash} if real_val else {})}
    with tracking.step_run("evaluate", step.pipeline_run_id, tracking_uri=step.uri, experiment=step.experiment,
                           tags=tags) as run_id:
        rec = Recognizer.load(model_pt)
        report = evaluate_pages(rec, store_pages(page_store), source=f"test split of {Path(page_store).name}")
        out = Path(out_dir)
        html_path = write_page_report(report, out)
        for f in (html_path, out / "report.json"):
            mlflow.log_artifact(str(f))
        s = report.summary()
        scores = {"test_cer": report.cer, "test_wer": report.wer, "test_n": report.n,
                  "test_line_count_exact": s["line_count_exact"]}
        result: dict[str, Any] = {"cer": report.cer, "wer": report.wer, "n": report.n, "eval_set_hash": eval_hash,
                                  "report": str(html_path), "line_count_exact": s["line_count_exact"]}
        if real_val:
            log_real_val(evaluate_pages(rec, iter(real), source=real_val), write_page_report, out, real_hash,
                         scores, result)
        mlflow.log_metrics(scores)
        tracking.log_to_parent(run_id, scores, tracking_uri=step.uri)
    return result
