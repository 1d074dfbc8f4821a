"""Reading pages end to end: Recognizer.recognise_page, `textrec predict --page`, `textrec evaluate --pages`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from fixtures.pages import blob_page
from fixtures.serving import make_model_pt
from PIL import Image

from textrec.cli import main
from textrec.evaluate import EvalDataError
from textrec.evaluate_pages import evaluate_page_tsv, split_page_text
from textrec.recognizer import ImageError, Recognizer
from textrec.segment import segment_page


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory) -> Path:
    """A tiny untrained model that reads letters into any ink: what matters here is the page path."""
    return make_model_pt(tmp_path_factory.mktemp("page-model") / "model.pt")


@pytest.fixture(scope="module")
def page_file(tmp_path_factory) -> Path:
    page, _ = blob_page([40, 100, 170, 240])
    path = tmp_path_factory.mktemp("pages") / "page.png"
    Image.fromarray(page).save(path)
    return path


def test_a_page_reads_as_its_segmented_lines_each_read_as_a_line_alone(model_pt, page_file):
    rec = Recognizer.load(model_pt)
    reading = rec.recognise_page(page_file)
    crops = segment_page(np.asarray(Image.open(page_file))).lines
    assert len(reading.lines) == len(crops) == 4
    alone = rec.recognise([c.image for c in crops])
    assert [ln.text for ln in reading.lines] == [r.text for r in alone]
    assert [ln.box for ln in reading.lines] == [c.box for c in crops]
    assert reading.text == "\n".join(ln.text for ln in reading.lines)
    assert reading.confidence == min(ln.confidence for ln in reading.lines)
    answer = reading.to_json()
    assert set(answer) == {"text", "lines"} and set(answer["lines"][0]) == {"box", "text", "confidence"}
    json.dumps(answer)  # plain JSON types only


def test_a_blank_page_reads_as_no_lines_and_empty_text(model_pt):
    rec = Recognizer.load(model_pt)
    for blank in (np.full((300, 400), 255, np.uint8), np.zeros((300, 400), np.uint8)):
        reading = rec.recognise_page(blank)
        assert reading.text == "" and reading.lines == [] and reading.confidence == 0.0


def test_pages_have_their_own_pixel_limit(model_pt, tmp_path):
    page, _ = blob_page([40, 100], width=1200, height=300)
    path = tmp_path / "big.png"
    Image.fromarray(page).save(path)
    rec = Recognizer.load(model_pt, max_pixels=100_000, max_page_pixels=200_000)
    with pytest.raises(ImageError, match="more than the limit of 100000"):
        rec.recognise([path])  # a line this big is refused ...
    with pytest.raises(ImageError, match="more than the limit of 200000"):
        Recognizer.load(model_pt, max_page_pixels=200_000).recognise_page(path.read_bytes())
    assert len(Recognizer.load(model_pt, max_page_pixels=400_000).recognise_page(path).lines) == 2


def test_predict_page_prints_each_line_and_json_with_boxes(model_pt, page_file, capsys):
    assert main(["predict", "--model", str(model_pt), "--page", str(page_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and all("\t" in ln for ln in lines)
    assert main(["predict", "--model", str(model_pt), "--page", "--json", str(page_file), str(page_file)]) == 0
    answers = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert len(answers) == 2 and answers[0]["image"] == str(page_file)
    assert [len(a["lines"]) for a in answers] == [4, 4]
    assert all(len(ln["box"]) == 4 for ln in answers[0]["lines"])


def test_evaluate_pages_scores_page_text_line_counts_and_draws_the_boxes(model_pt, page_file, tmp_path, capsys):
    tsv = tmp_path / "pages.tsv"
    tsv.write_text(f"{page_file}\tfirst line\\nsecond\\nthird\\nfourth\n{page_file}\tonly\\ntwo\n")
    report = evaluate_page_tsv(model_pt, tsv)
    s = report.summary()
    assert report.n == 2 and s["lines_true"] == 6 and s["lines_found"] == 8 and s["line_count_exact"] == 1
    assert 0 < report.cer and s["pages_per_s"] > 0
    out = tmp_path / "report"
    assert main(["evaluate", "--model", str(model_pt), "--pages", str(tsv), "--report", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] == 2 and summary["line_count_exact"] == 1
    page = (out / "report.html").read_text()
    assert page.count("<img") == 2 and "4 found / 4 true" in page and "4 found / 2 true" in page
    assert json.loads((out / "report.json").read_text())["rows"][0]["lines_found"] == 4


def test_page_labels_that_cannot_be_read_are_named(model_pt, tmp_path):
    tsv = tmp_path / "pages.tsv"
    tsv.write_text("missing.png\tsome\\ntext\n")
    with pytest.raises(EvalDataError, match="row 1: image 'missing.png' not found"):
        evaluate_page_tsv(model_pt, tsv)
    (tmp_path / "junk.png").write_bytes(b"not an image")
    tsv.write_text("junk.png\ttext\n")
    with pytest.raises(EvalDataError, match="junk.png: not an image"):
        evaluate_page_tsv(model_pt, tsv)


def test_page_text_splits_on_written_and_real_line_breaks():
    assert split_page_text("a b\\nc") == ["a b", "c"]
    assert split_page_text("a\nb") == ["a", "b"]


def test_evaluate_pages_reads_a_page_store_split(model_pt, tmp_path, capsys):
    from textrec.data.pages import PageConfig, synthesize_pages

    store = synthesize_pages(4, tmp_path / "pages.h5", seed=2, workers=1, progress=False,
                             page_config=PageConfig(scale=0.5, lines=(2, 4)))
    assert main(["evaluate", "--model", str(model_pt), "--pages", str(store), "--split", "train", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n"] >= 1 and summary["lines_true"] >= 2 * summary["n"]
