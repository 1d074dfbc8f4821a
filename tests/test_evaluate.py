"""Evaluation on a line store, a TSV and an IAM-layout folder; the HTML/JSON report; bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.lines import line_image
from fixtures.models import tiny_model_artifact
from PIL import Image

from textrec.data.store import LineWriter
from textrec.evaluate import (
    EvalDataError,
    evaluate,
    evaluate_iam_lines,
    evaluate_store,
    evaluate_tsv,
    write_report,
)
from textrec.metrics import cer, wer
from textrec.recognizer import Recognizer


@pytest.fixture(scope="module")
def recognizer(tmp_path_factory) -> Recognizer:
    return Recognizer.load(tiny_model_artifact(tmp_path_factory.mktemp("model") / "model.pt"))


def write_png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
    return path


TEXTS = ["A MOVE to stop", "Mr. Gaitskell from", "nominating any more", "Labour life Peers"]


def test_evaluate_scores_every_line_and_agrees_with_the_metrics(recognizer):
    samples = [(line_image(width=100 + 40 * i, seed=i, height=40), t) for i, t in enumerate(TEXTS)]
    report = evaluate(recognizer, samples, batch_size=3)
    assert report.n == 4 and len(report.rows) == 4
    preds = [r.prediction for r in report.rows]
    assert [r.truth for r in report.rows] == TEXTS
    assert report.cer == pytest.approx(cer(preds, TEXTS)) and report.wer == pytest.approx(wer(preds, TEXTS))
    for r in report.rows:
        assert r.cer == pytest.approx(cer([r.prediction], [r.truth])) and 0.0 <= r.confidence <= 1.0


def test_images_are_kept_only_for_the_worst_lines(recognizer):
    samples = [(line_image(width=80 + 10 * i, seed=i, height=40), TEXTS[i % 4][: 2 + i]) for i in range(8)]
    report = evaluate(recognizer, samples, keep_images=3)
    kept = [r for r in report.rows if r.image is not None]
    assert len(kept) == 3
    assert min(r.cer for r in kept) >= max(r.cer for r in report.rows if r.image is None)


def test_nothing_to_evaluate_is_an_error(recognizer):
    with pytest.raises(EvalDataError, match="no labelled lines"):
        evaluate(recognizer, [])


def test_evaluate_store_reads_one_split(recognizer, tmp_path):
    path = tmp_path / "lines.h5"
    with LineWriter(path) as w:
        for i, t in enumerate(TEXTS):
            w.add(line_image(width=120, seed=i, height=40), t, split="test" if i % 2 else "train", source="unit")
    report = evaluate_store(recognizer, path, "test")
    assert report.n == 2 and [r.truth for r in report.rows] == [TEXTS[1], TEXTS[3]]
    assert report.source.endswith("lines.h5:test")
    with pytest.raises(EvalDataError, match="lines.h5: split 'val' has no lines"):
        evaluate_store(recognizer, path, "val")
    with pytest.raises(KeyError, match="no split 'dev'"):
        evaluate_store(recognizer, path, "dev")


def test_evaluate_tsv_reads_paths_relative_to_the_file(recognizer, tmp_path):
    rows = []
    for i, t in enumerate(TEXTS[:3]):
        write_png(tmp_path / "img" / f"{i}.png", line_image(width=150, seed=i, height=40))
        rows.append(f"img/{i}.png\t{t}")
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("# path\ttext\n" + "\n".join(rows) + "\n\n")
    report = evaluate_tsv(recognizer, tsv)
    assert report.n == 3 and [r.name for r in report.rows] == ["img/0.png", "img/1.png", "img/2.png"]


@pytest.mark.parametrize("content, message", [
    ("", "no labelled rows"),
    ("# only a comment\n", "no labelled rows"),
    ("img/0.png\tfine\nimg/0.png no tab here\n", r"row 2: expected 'image path<TAB>transcription', found no tab"),
    ("img/missing.png\ttext\n", r"row 1: image 'img/missing.png' not found"),
    ("\tsome text\n", "row 1: empty image path"),
])
def test_bad_tsv_rows_are_named(recognizer, tmp_path, content, message):
    write_png(tmp_path / "img" / "0.png", line_image(width=100, seed=0, height=40))
    tsv = tmp_path / "labels.tsv"
    tsv.write_text(content)
    with pytest.raises(EvalDataError, match=message) as e:
        evaluate_tsv(recognizer, tsv)
    assert "labels.tsv" in str(e.value)


def test_unreadable_image_in_a_tsv_is_named(recognizer, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"definitely not a png")
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("broken.png\ttext\n")
    with pytest.raises(EvalDataError, match="broken.png: not an image"):
        evaluate_tsv(recognizer, tsv)


def test_missing_tsv_is_named(recognizer, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tsv: no such labels file"):
        evaluate_tsv(recognizer, tmp_path / "nope.tsv")


def make_iam(root: Path) -> Path:
    """A two-line folder in the IAM lines layout."""
    lines = ["#--- a comment as in the original file", "a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop",
             "a01-000u-01 err 156 19 395 932 1850 105 Mr.|Gaitskell|from"]
    (root / "lines.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "lines.txt").write_text("\n".join(lines) + "\n")
    for i in range(2):
        write_png(root / "lines" / "a01" / "a01-000u" / f"a01-000u-0{i}.png", line_image(width=200, seed=i, height=40))
    return root


def test_evaluate_iam_lines_folder(recognizer, tmp_path):
    root = make_iam(tmp_path / "iam")
    report = evaluate_iam_lines(recognizer, root)
    assert report.n == 2 and [r.truth for r in report.rows] == ["A MOVE to stop", "Mr. Gaitskell from"]
    assert [r.name for r in report.rows] == ["a01-000u-00", "a01-000u-01"]
    assert evaluate_iam_lines(recognizer, root, ok_only=True).n == 1


def test_iam_folder_problems_are_named(recognizer, tmp_path):
    with pytest.raises(EvalDataError, match="no lines.txt or ascii/lines.txt"):
        evaluate_iam_lines(recognizer, tmp_path)
    root = make_iam(tmp_path / "iam")
    (root / "lines" / "a01" / "a01-000u" / "a01-000u-01.png").unlink()
    with pytest.raises(EvalDataError, match="row 3: image for a01-000u-01 not found"):
        evaluate_iam_lines(recognizer, root)
    (root / "lines.txt").write_text("a01-000u-00 ok 154\n")
    with pytest.raises(EvalDataError, match="row 1: expected 9 space-separated fields"):
        evaluate_iam_lines(recognizer, root)


def test_report_shows_the_worst_lines_with_images_and_a_summary(recognizer, tmp_path):
    samples = [(line_image(width=100 + 20 * i, seed=i, height=40), t) for i, t in enumerate(TEXTS)]
    report = evaluate(recognizer, samples)
    page = write_report(report, tmp_path / "report", worst=2)
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 2
    assert f"CER <b>{report.cer:.2%}</b>" in html and "Lines by CER" in html
    worst = max(report.rows, key=lambda r: r.cer)
    assert worst.truth.replace("'", "&#x27;") in html
    data = json.loads((tmp_path / "report" / "report.json").read_text())
    assert data["n"] == 4 and data["cer"] == pytest.approx(report.cer) and len(data["rows"]) == 4
    assert sum(data["cer_bins"].values()) == 4
    assert set(data["rows"][0]) == {"name", "truth", "prediction", "confidence", "cer"}
