"""Score a model on labelled lines and show where it fails.

Sources of labelled lines: a line store split, a TSV file (``image path<TAB>transcription`` per
row, paths relative to the TSV's folder), or a folder in the IAM lines layout (``lines.txt`` or
``ascii/lines.txt`` next to ``lines/a01/a01-000u/a01-000u-00.png``); :func:`real_samples` reads the
last two, or an s3:// URI of either, as one kind of source (a labelled real set). :func:`write_report` writes an
HTML page (the worst lines as image, truth and prediction, plus a CER summary) and ``report.json``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import os
import posixpath
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from textrec import storage
from textrec.io import atomic_write
from textrec.metrics import cer as cer_score
from textrec.metrics import line_cer
from textrec.metrics import wer as wer_score
from textrec.recognizer import Recognizer, read_image

if TYPE_CHECKING:
    from textrec.tracking import StepTracking

Sample = tuple[np.ndarray, str] | tuple[np.ndarray, str, str]  # (image, truth[, name])
CER_BINS = (0.0, 0.05, 0.10, 0.25, 0.5)
TEST_SPLIT = "test"  # the fixed split that models are compared on


class EvalDataError(ValueError):
    """Labelled data that cannot be read: the message names the file and row."""


@dataclass
class EvalRow:
    truth: str
    prediction: str
    confidence: float
    cer: float
    image: np.ndarray | None = None  # kept only for the worst rows (see ``keep_images``)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "truth": self.truth, "prediction": self.prediction,
                "confidence": round(float(self.confidence), 5), "cer": round(float(self.cer), 5)}


@dataclass
class EvalReport:
    cer: float
    wer: float
    n: int
    rows: list[EvalRow] = field(default_factory=list)
    source: str = ""
    model: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """CER, WER, n and how the lines spread over CER bins."""
        per_line = np.array([r.cer for r in self.rows], dtype=np.float64)
        bins = {"0 (exact)": int((per_line == 0).sum())}
        edges = [*CER_BINS, np.inf]
        for lo, hi in zip(edges[:-1], edges[1:], strict=True):
            label = f"({lo:.0%}, {hi:.0%}]" if np.isfinite(hi) else f"> {lo:.0%}"
            bins[label] = int(((per_line > lo) & (per_line <= hi)).sum())
        return {"cer": self.cer, "wer": self.wer, "n": self.n, "source": self.source, "cer_bins": bins,
                "mean_confidence": float(np.mean([r.confidence for r in self.rows])) if self.rows else 0.0}

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "model": self.model, "rows": [r.to_dict() for r in self.rows]}


def _as_recognizer(model: Recognizer | str | os.PathLike) -> Recognizer:
    return model if isinstance(model, Recognizer) else Recognizer.load(model)


def _chunks(samples: Iterable[Sample], size: int) -> Iterator[list[Sample]]:
    chunk: list[Sample] = []
    for s in samples:
        chunk.append(s)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def evaluate(recognizer: Recognizer | str | os.PathLike, samples: Iterable[Sample], *, batch_size: int = 16,
             keep_images: int = 100, source: str = "") -> EvalReport:
    """Recognise every (image, truth[, name]) and score it. CER/WER are corpus-level (summed edits over
    summed reference length). Images are kept for the ``keep_images`` worst lines only, so memory stays
    flat on big sets."""
    rec = _as_recognizer(recognizer)
    rows: list[EvalRow] = []
    for chunk in _chunks(samples, 256):
        tensors = [rec.preprocess(s[0], s[2] if len(s) > 2 else f"line {len(rows) + j}")
                   for j, s in enumerate(chunk)]
        results = rec.recognise_tensors(tensors, batch_size)
        for s, r in zip(chunk, results, strict=True):
            truth = rec.charset.normalise(s[1])
            rows.append(EvalRow(truth, r.text, float(r.confidence), line_cer(r.text, truth),
                                np.asarray(s[0]) if isinstance(s[0], np.ndarray) else None,
                                s[2] if len(s) > 2 else f"line {len(rows)}"))
        _drop_images(rows, keep_images)
    if not rows:
        raise EvalDataError(f"{source or 'evaluation'}: no labelled lines to evaluate")
    preds, truths = [r.prediction for r in rows], [r.truth for r in rows]
    info = {k: v for k, v in rec.info.items() if k in ("model_name", "created", "decoder", "metrics")}
    return EvalReport(cer_score(preds, truths), wer_score(preds, truths), len(rows), rows, source, info)


def _drop_images(rows: list[EvalRow], keep: int) -> None:
    with_images = [r for r in rows if r.image is not None]
    if len(with_images) <= keep:
        return
    for r in sorted(with_images, key=lambda r: r.cer, reverse=True)[keep:]:
        r.image = None


# ---------------------------------------------------------------------------------------------------
# Labelled data sources


def store_samples(store_path: str | os.PathLike, split: str = TEST_SPLIT, limit: int | None = None
                  ) -> Iterator[tuple[np.ndarray, str, str]]:
    from textrec.data.store import LineStore

    store = LineStore(store_path)
    idx = store.indices(split)  # KeyError naming the store and its splits
    if len(idx) == 0:
        raise EvalDataError(f"{store_path}: split {split!r} has no lines; line counts by split: "
                            f"{store.info()['splits']}")
    for i in idx[:limit]:
        yield store.image(int(i)), store.text(int(i)), f"{split}/{int(i)}"


def split_samples(stores: Sequence[str | os.PathLike], split: str = TEST_SPLIT) -> list[Sample]:
    """(image, truth, name) of every line in ``split`` of each store that has it, in store order."""
    from textrec.data.store import LineStore

    samples: list[Sample] = []
    for p in stores:
        if LineStore(p).info()["splits"].get(split):
            samples += [(img, text, f"{Path(p).stem}/{name}") for img, text, name in store_samples(p, split)]
    if not samples:
        raise EvalDataError(f"no {split!r} lines in {[str(p) for p in stores]}")
    return samples


def eval_set_hash(samples: Iterable[Sample]) -> str:
    """SHA-256 over an evaluation set's images and texts, in order: equal hashes mean equal sets."""
    h = hashlib.sha256()
    for image, text, *_ in samples:
        a = np.ascontiguousarray(np.asarray(image))
        for part in (str(a.shape).encode(), a.tobytes(), text.encode()):
            h.update(len(part).to_bytes(8, "little"))
            h.update(part)
    return h.hexdigest()


def evaluate_store(model: Recognizer | str | os.PathLike, store_path: str | os.PathLike, split: str = "test",
                   *, limit: int | None = None, **kwargs: Any) -> EvalReport:
    """Score one split of a line store (a path or an s3:// URI)."""
    from textrec import storage

    with storage.local_path(store_path) as local:
        return evaluate(model, store_samples(local, split, limit), source=f"{store_path}:{split}", **kwargs)


def _tsv_entries(tsv: Path) -> list[tuple[int, str, str]]:
    """(row number, image name, truth) of a labels TSV, before any image is looked for."""
    if not tsv.is_file():
        raise FileNotFoundError(f"{tsv}: no such labels file")
    try:
        text = tsv.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise EvalDataError(f"{tsv}: not UTF-8 text ({e})") from e
    entries: list[tuple[int, str, str]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        if "\t" not in line:
            raise EvalDataError(f"{tsv}, row {n}: expected 'image path<TAB>transcription', found no tab "
                                f"in {line[:80]!r}")
        name, truth = line.split("\t", 1)
        if not name.strip():
            raise EvalDataError(f"{tsv}, row {n}: empty image path")
        entries.append((n, name.strip(), truth))
    if not entries:
        raise EvalDataError(f"{tsv}: no labelled rows (expected 'image path<TAB>transcription' lines)")
    return entries


def tsv_rows(tsv_path: str | os.PathLike) -> list[tuple[Path, str, str]]:
    """(image path, truth, row name) from ``path<TAB>text`` rows; blank lines and ``#`` comments skipped."""
    tsv = Path(tsv_path)
    rows: list[tuple[Path, str, str]] = []
    for n, name, truth in _tsv_entries(tsv):
        path = (tsv.parent / name).resolve() if not os.path.isabs(name) else Path(name)
        if not path.is_file():
            raise EvalDataError(f"{tsv}, row {n}: image {name!r} not found (looked for {path})")
        rows.append((path, truth, name))
    return rows


def read_rows(rows: list[tuple[Path, str, str]], where: str) -> Iterator[Sample]:
    """The (image, truth, name) samples of ``rows``, read one at a time; an unreadable image is an
    :class:`EvalDataError` that names ``where`` and the file."""
    for path, truth, name in rows:
        try:
            image = read_image(path)
        except ValueError as e:
            raise EvalDataError(f"{where}: {e}") from e
        yield image, truth, name


def evaluate_tsv(model: Recognizer | str | os.PathLike, tsv_path: str | os.PathLike, **kwargs: Any
                 ) -> EvalReport:
    """Score the images listed in a TSV of ``image path<TAB>transcription`` rows."""
    return evaluate(model, real_samples(tsv_path, kind="tsv"), source=str(tsv_path), **kwargs)


def iam_rows(folder: str | os.PathLike, *, ok_only: bool = False) -> list[tuple[Path, str, str]]:
    """(image, truth, line id) from an IAM lines folder: ``lines.txt`` (or ``ascii/lines.txt``) with rows
    ``a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop`` and images ``lines/a01/a01-000u/<id>.png``."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder (expected an IAM lines folder)")
    listing = next((p for p in (root / "lines.txt", root / "ascii" / "lines.txt") if p.is_file()), None)
    if listing is None:
        raise EvalDataError(f"{root}: no lines.txt or ascii/lines.txt (the IAM line transcriptions)")
    rows: list[tuple[Path, str, str]] = []
    for n, line in enumerate(listing.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(" ", 8)
        if len(parts) < 9:
            raise EvalDataError(f"{listing}, row {n}: expected 9 space-separated fields "
                                f"(id, status, grey level, components, x, y, w, h, text), got {len(parts)}")
        line_id, status, text = parts[0], parts[1], parts[8]
        if ok_only and status != "ok":
            continue
        pieces = line_id.split("-")
        if len(pieces) < 3:
            raise EvalDataError(f"{listing}, row {n}: line id {line_id!r} is not like a01-000u-00")
        image = root / "lines" / pieces[0] / f"{pieces[0]}-{pieces[1]}" / f"{line_id}.png"
        if not image.is_file():
            raise EvalDataError(f"{listing}, row {n}: image for {line_id} not found (looked for {image})")
        rows.append((image, text.replace("|", " "), line_id))
    if not rows:
        raise EvalDataError(f"{listing}: no line rows")
    return rows


def evaluate_iam_lines(model: Recognizer | str | os.PathLike, folder: str | os.PathLike, *,
                       ok_only: bool = False, **kwargs: Any) -> EvalReport:
    """Score an IAM-layout lines folder."""
    return evaluate(model, real_samples(folder, kind="iam", ok_only=ok_only), source=str(folder), **kwargs)


# ---------------------------------------------------------------------------------------------------
# Labelled real sets: one entry point for a TSV, an IAM lines folder, or an s3:// URI of either

LABELLED_KINDS = ("a TSV of 'image path<TAB>transcription' rows (images relative to it), a folder in the IAM "
                  "lines layout (lines.txt or ascii/lines.txt, images lines/a01/a01-000u/<id>.png), or an "
                  "s3:// URI of either")
IAM_LISTINGS = ("lines.txt", "ascii/lines.txt")
FETCH_THREADS = 8  # parallel image downloads for a TSV on S3


def real_samples(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, kind: str = "auto",
                 ok_only: bool = False) -> Iterator[Sample]:
    """(image, truth, name) of every line of a labelled real set, read one at a time (memory stays flat).

    ``source`` is a TSV, an IAM lines folder or an s3:// URI of either (see :func:`labelled_rows`).
    Without ``cache_dir`` an s3:// source is fetched into a temporary folder that lives as long as the
    iteration. Errors name the source and the row at fault.
    """
    if storage.is_s3(source) and cache_dir is None:
        with tempfile.TemporaryDirectory(prefix="textrec-labelled-") as tmp:
            yield from real_samples(source, cache_dir=tmp, kind=kind, ok_only=ok_only)
        return
    rows = labelled_rows(source, cache_dir=cache_dir, kind=kind, ok_only=ok_only)
    yield from read_rows(rows, str(source))


def labelled_rows(source: str | os.PathLike, *, cache_dir: str | os.PathLike | None = None, kind: str = "auto",
                  ok_only: bool = False, download: bool = True) -> list[tuple[Path, str, str]]:
    """(image path, truth, name) of a labelled real set. ``kind`` ``auto``: a file is a TSV, a folder an
    IAM lines folder; ``tsv`` or ``iam`` insist on one.

    An s3:// source is fetched under ``cache_dir`` first: a TSV with the images it names (relative to
    it), an IAM folder whole. With ``download=False`` the copy already there is read (what a node's
    other ranks do once its first rank has fetched it).
    """
    if kind not in ("auto", "tsv", "iam"):
        raise ValueError(f"labelled set kind must be auto, tsv or iam, got {kind!r}")
    src = str(source)
    if not src.strip():
        raise EvalDataError(f"empty labelled set source; expected {LABELLED_KINDS}")
    local = Path(src)
    if storage.is_s3(src):
        if cache_dir is None:
            raise ValueError(f"{src}: an s3:// labelled set needs a cache_dir to be fetched into")
        local = _fetch_labelled(src, Path(cache_dir), download=download)
    try:
        return _local_rows(local, kind, ok_only)
    except (EvalDataError, FileNotFoundError) as e:
        if local == Path(src):
            raise  # the message already names the source
        raise EvalDataError(f"{src} (fetched to {local}): {e}") from e


def _local_rows(path: Path, kind: str, ok_only: bool) -> list[tuple[Path, str, str]]:
    if kind == "tsv" or (kind == "auto" and path.is_file()):
        if kind == "auto" and path.suffix in (".h5", ".hdf5"):
            raise EvalDataError(f"{path}: a line store, not a labelled set of images; expected {LABELLED_KINDS}")
        return tsv_rows(path)
    if kind == "iam" or (kind == "auto" and path.is_dir()):
        if kind == "auto" and not any((path / name).is_file() for name in IAM_LISTINGS):
            raise EvalDataError(f"{path}: a folder without lines.txt or ascii/lines.txt; expected {LABELLED_KINDS}")
        return iam_rows(path, ok_only=ok_only)
    raise FileNotFoundError(f"{path}: no such file or folder; expected {LABELLED_KINDS}")


def _fetch_labelled(uri: str, cache: Path, *, download: bool) -> Path:
    """The local copy of an s3:// labelled set under ``cache``, fetched afresh (unless ``download`` is
    False), its keys mirrored below one folder per URI."""
    bucket, key = storage.split_s3(uri)
    key = key.strip("/")
    root = cache / "labelled" / hashlib.sha256(uri.encode()).hexdigest()[:12]
    local = root / key if key else root
    if not download:
        return local
    try:
        storage.download(uri, local)
    except storage.StorageError as e:
        raise EvalDataError(f"{e}; expected {LABELLED_KINDS}") from e
    if local.is_file():
        _fetch_tsv_images(uri, bucket, key, root, local)
    return local


def _fetch_tsv_images(uri: str, bucket: str, key: str, root: Path, tsv: Path) -> None:
    """Download the images a TSV on S3 names, relative to its key, to the same places under ``root``."""
    from concurrent.futures import ThreadPoolExecutor

    wanted: dict[str, tuple[int, str]] = {}
    for n, name, _ in _tsv_entries(tsv):
        if os.path.isabs(name):
            continue  # a local path, checked as the rows are read
        k = posixpath.normpath(posixpath.join(posixpath.dirname(key), name))
        if k == ".." or k.startswith("../"):
            raise EvalDataError(f"{uri}, row {n}: image {name!r} lies outside the bucket {bucket}")
        wanted.setdefault(k, (n, name))

    def fetch(k: str) -> None:
        n, name = wanted[k]
        try:
            storage.download(f"s3://{bucket}/{k}", root / k)
        except storage.StorageError as e:
            raise EvalDataError(f"{uri}, row {n}: image {name!r} could not be fetched ({e})") from e

    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        list(pool.map(fetch, wanted))


# ---------------------------------------------------------------------------------------------------
# Report


def _png_base64(image: np.ndarray, max_width: int = 900) -> str:
    im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    if im.width > max_width:
        im = im.resize((max_width, max(1, round(im.height * max_width / im.width))), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


REPORT_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.4em .6em;text-align:left;vertical-align:top}
.mono{font-family:ui-monospace,monospace;white-space:pre-wrap}img{max-width:900px;border:1px solid #eee}
.bad{color:#b00}.num{text-align:right}"""


def render_html(report: EvalReport, worst: int = 20) -> str:
    s = report.summary()
    e = html.escape
    bins = "".join(f"<tr><td>{e(k)}</td><td class=num>{v}</td></tr>" for k, v in s["cer_bins"].items())
    rows = []
    for r in sorted(report.rows, key=lambda r: r.cer, reverse=True)[:worst]:
        img = (f'<img alt="{e(r.name)}" src="data:image/png;base64,{_png_base64(r.image)}">'
               if r.image is not None else "<em>image not kept</em>")
        rows.append(f"<tr><td>{e(r.name)}<br>CER {r.cer:.1%}<br>conf {r.confidence:.2f}</td><td>{img}"
                    f"<div class=mono>truth: {e(r.truth)}</div><div class='mono bad'>pred:&nbsp; "
                    f"{e(r.prediction)}</div></td></tr>")
    model = e(json.dumps(report.model.get("decoder", {})))
    return (f"<!doctype html><html><head><meta charset=utf-8><title>textrec evaluation</title>"
            f"<style>{REPORT_STYLE}</style></head><body><h1>Evaluation: {e(report.source or 'lines')}</h1>"
            f"<p>{report.n} lines &middot; CER <b>{report.cer:.2%}</b> &middot; WER <b>{report.wer:.2%}</b>"
            f" &middot; mean confidence {s['mean_confidence']:.3f} &middot; model "
            f"{e(str(report.model.get('model_name', '')))} decoder {model}</p>"
            f"<h2>Lines by CER</h2><table><tr><th>CER</th><th>lines</th></tr>{bins}</table>"
            f"<h2>The {min(worst, report.n)} worst lines</h2><table>{''.join(rows)}</table></body></html>")


def write_report(report: EvalReport, out_dir: str | os.PathLike, worst: int = 20) -> Path:
    """Write ``out_dir/report.html`` (worst lines with images, CER summary) and ``out_dir/report.json``."""
    out = Path(out_dir)
    atomic_write(out / "report.json", json.dumps(report.to_dict(), indent=2))
    path = out / "report.html"
    atomic_write(path, render_html(report, worst))
    return path


def log_real_val(report: Any, write: Any, out: Path, real_hash: str, scores: dict[str, Any],
                 result: dict[str, Any]) -> None:
    """An evaluate step's score on its labelled real set (lines or pages): ``write`` puts the report
    under ``out/real_val`` (logged to the active run), ``scores`` gets the metrics, ``result`` also the
    set's hash and the report's path."""
    import mlflow

    page = write(report, out / "real_val")
    real = {"real_val_cer": report.cer, "real_val_wer": report.wer, "real_val_n": report.n}
    scores.update(real)
    for f in (page, out / "real_val" / "report.json"):
        mlflow.log_artifact(str(f), artifact_path="real_val")
    result.update(real, real_val_hash=real_hash, real_val_report=str(page))


def evaluate_split(model_pt: str | os.PathLike, stores: Sequence[str | os.PathLike], out_dir: str | os.PathLike,
                   *, step: StepTracking | None = None, real_val: str = "") -> dict[str, Any]:
    """The pipeline's evaluate step: CER/WER on the fixed test split of ``stores``, an HTML report and a
    picture of the worst lines in ``out_dir``, all logged to the step's MLflow run. With ``real_val`` (a
    labelled real set, see :func:`real_samples`) that set is scored too, reported under ``out_dir/real_val``.

    Returns ``cer``, ``wer``, ``n``, ``eval_set_hash`` (what the promotion gate compares on),
    ``report`` (the HTML file) and, with ``real_val``, ``real_val_cer``, ``real_val_wer``, ``real_val_n``
    and ``real_val_hash`` (the gate compares on these when the champion was scored on the same set).
    """
    import mlflow

    from textrec import tracking
    from textrec.data.show import save_prediction_grid

    step = step or tracking.StepTracking()
    samples = split_samples(stores)
    eval_hash = eval_set_hash(samples)
    real = list(real_samples(real_val)) if real_val else []  # a bad source fails before anything is logged
    real_hash = eval_set_hash(real) if real else ""
    tags = {tracking.TAG_EVAL_SET: eval_hash, **({tracking.TAG_REAL_VAL_SET: real_hash} if real else {})}
    # The step's run spans the evaluation itself, so its wall time in MLflow is the step's.
    with tracking.step_run("evaluate", step.pipeline_run_id, tracking_uri=step.uri, experiment=step.experiment,
                           tags=tags) as run_id:
        report = evaluate(model_pt, samples,
                          source=f"{TEST_SPLIT} split of {', '.join(Path(p).name for p in stores)}")
        out = Path(out_dir)
        html_path = write_report(report, out)
        grid = save_prediction_grid(report.rows, out / "predictions.png")
        scores = {"test_cer": report.cer, "test_wer": report.wer, "test_n": report.n}
        for f in (html_path, out / "report.json", grid):
            mlflow.log_artifact(str(f))
        result: dict[str, Any] = {"cer": report.cer, "wer": report.wer, "n": report.n,
                                  "eval_set_hash": eval_hash, "report": str(html_path)}
        if real:
            log_real_val(evaluate(model_pt, real, source=real_val), write_report, out, real_hash, scores, result)
        mlflow.log_metrics(scores)
        tracking.log_to_parent(run_id, scores, tracking_uri=step.uri)
    return result
