"""IAM readers on tiny trees in the official layouts, built by the tests (no real IAM data)."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.iam_tree import FakeForm, build_iam, sample_forms, truncate_file
from PIL import Image

from textrec import storage
from textrec.charset import Charset
from textrec.cli import main
from textrec.data.iam import (
    SOURCE_LINES,
    SOURCE_PARAGRAPHS,
    UNLISTED,
    IAMError,
    hash_split,
    ingest_iam,
    parse_lines_txt,
)
from textrec.data.store import LineStore

EXPECTED_SPLITS = {"a01-000u-00": "train", "a01-000u-01": "train", "a01-003-00": "val", "a01-003-01": "val",
                   "b02-010-00": "test", "c03-007-00": "train", "c03-007-01": UNLISTED}


def ingest(root, out, **kw):
    return LineStore(ingest_iam(str(root), out, progress=False, **kw))


def lines_of(store, source=SOURCE_LINES):
    return list(store.lines(store.indices(source=source)))


@pytest.fixture(scope="module")
def both_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("iam") / "both"
    build_iam(root, layout="both")
    return root


def test_lines_layout_texts_flags_writers_and_official_splits(tmp_path):
    build_iam(tmp_path / "iam", layout="lines")
    store = ingest(tmp_path / "iam", tmp_path / "iam.h5")
    ids = [f"{f.id}-{k:02d}" for f in sample_forms() for k in range(len(f.lines))]
    lines = lines_of(store)
    assert [ln.text for ln in lines] == [t for f in sample_forms() for t, _ in f.lines]
    assert lines[2].text == 'He said "Labour life Peers"'  # | -> space, &quot; -> "
    assert [ln.ok for ln in lines] == [ok for f in sample_forms() for _, ok in f.lines]
    assert [ln.writer for ln in lines] == [f.writer for f in sample_forms() for _ in f.lines]
    assert [ln.split for ln in lines] == [EXPECTED_SPLITS[i] for i in ids]
    assert store.info()["sources"] == {SOURCE_LINES: 7}
    assert store.meta["splits"].startswith("official")


def test_lines_layout_images_are_the_png_pixels(tmp_path):
    build_iam(tmp_path / "iam", layout="lines")
    store = ingest(tmp_path / "iam", tmp_path / "iam.h5")
    png = tmp_path / "iam" / "lines" / "b02" / "b02-010" / "b02-010-00.png"
    assert np.array_equal(store.image(4), np.asarray(Image.open(png).convert("L")))
    assert store.image(4).dtype == np.uint8 and store.image(4).mean() > 200  # light paper


def test_forms_layout_crops_the_same_lines_and_adds_paragraphs(tmp_path, both_tree):
    build_iam(tmp_path / "forms", layout="forms")
    by_forms = ingest(tmp_path / "forms", tmp_path / "f.h5")
    by_lines = ingest(both_tree, tmp_path / "b.h5")
    crops, cuts = lines_of(by_forms), lines_of(by_lines)
    assert [c.text for c in crops] == [c.text for c in cuts]
    assert [c.ok for c in crops] == [c.ok for c in cuts] and [c.split for c in crops] == [c.split for c in cuts]
    for crop, cut in zip(crops, cuts, strict=True):  # union of cmp boxes + 8 px margin = the cut image
        assert np.array_equal(crop.image, cut.image)
    paragraphs = lines_of(by_forms, SOURCE_PARAGRAPHS)
    assert [p.text for p in paragraphs] == [" ".join(t for t, _ in f.lines) for f in sample_forms()]
    assert [p.split for p in paragraphs] == ["train", "val", "test", "train"]
    assert [p.ok for p in paragraphs] == [True, False, True, True]
    first = paragraphs[0].image
    assert first.shape[0] > sum(c.image.shape[0] for c in crops[:2]) - 16  # both lines and the gap
    assert first.shape[1] == max(c.image.shape[1] for c in crops[:2])


def test_both_layouts_take_lines_from_the_cut_images_and_paragraphs_from_forms(tmp_path, both_tree):
    store = ingest(both_tree, tmp_path / "b.h5")
    assert store.info()["sources"] == {SOURCE_LINES: 7, SOURCE_PARAGRAPHS: 4}
    assert store.meta["layout"] == "lines" and store.meta["paragraphs"] is True


def test_without_split_files_writers_go_wholly_to_one_hashed_split(tmp_path):
    forms = [FakeForm(f"p{k:02d}-001", f"{k % 5:03d}", [(f"line one of {k}", True), ("and two", True)])
             for k in range(12)]
    build_iam(tmp_path / "iam", layout="lines", forms=forms, split_files=False)
    a = ingest(tmp_path / "iam", tmp_path / "a.h5")
    b = ingest(tmp_path / "iam", tmp_path / "b.h5")
    assert a.content_hash == b.content_hash  # deterministic
    per_writer = {}
    for line in a.lines():
        per_writer.setdefault(line.writer, set()).add(line.split)
    assert all(len(s) == 1 for s in per_writer.values())
    assert {w: s.pop() for w, s in per_writer.items()} == {w: hash_split(w) for w in per_writer}
    assert set(a.splits) <= {"train", "val", "test"}


def test_hash_split_is_roughly_80_10_10():
    counts = {"train": 0, "val": 0, "test": 0}
    for k in range(3000):
        counts[hash_split(f"{k:03d}")] += 1
    assert 2250 < counts["train"] < 2550 and 200 < counts["val"] < 400 and 200 < counts["test"] < 400


def test_without_forms_txt_the_form_id_decides_the_split(tmp_path):
    build_iam(tmp_path / "iam", layout="lines", split_files=False, with_forms_txt=False)
    store = ingest(tmp_path / "iam", tmp_path / "x.h5")
    assert set(store.writers) == {""}
    assert [ln.split for ln in store.lines()] == [hash_split(f.id) for f in sample_forms() for _ in f.lines]


def test_ingests_from_s3_like_from_a_folder(tmp_path, s3, both_tree):
    storage.upload(both_tree, s3.uri("datasets/iam"))
    from_s3 = ingest(s3.uri("datasets/iam"), tmp_path / "s3.h5")
    local = ingest(both_tree, tmp_path / "local.h5")
    assert from_s3.content_hash == local.content_hash and len(from_s3) == 11
    assert from_s3.meta["source"] == s3.uri("datasets/iam")


def test_a_missing_s3_prefix_is_an_error_naming_it(tmp_path, s3):
    with pytest.raises(IAMError, match=r"s3://.*/datasets/none: cannot read"):
        ingest(s3.uri("datasets/none"), tmp_path / "x.h5")


def test_a_missing_folder_is_named(tmp_path):
    with pytest.raises(IAMError, match=r"no-iam-here: no such IAM folder; expected"):
        ingest(tmp_path / "no-iam-here", tmp_path / "x.h5")


def test_a_wrong_layout_lists_what_was_expected(tmp_path):
    (tmp_path / "iam" / "images").mkdir(parents=True)
    (tmp_path / "iam" / "lines.txt").write_text("a01-000u-00 ok 154 1 0 0 5 5 A\n")
    with pytest.raises(IAMError) as e:
        ingest(tmp_path / "iam", tmp_path / "x.h5")
    message = str(e.value)
    assert "not an IAM distribution" in message and "ascii/lines.txt" in message and "xml/" in message
    assert "formsA-D" in message and "found lines.txt" in message
    assert not (tmp_path / "x.h5").exists()


def test_a_truncated_png_is_named_and_no_store_is_left(tmp_path):
    build_iam(tmp_path / "iam", layout="lines")
    png = tmp_path / "iam" / "lines" / "a01" / "a01-003" / "a01-003-01.png"
    truncate_file(png)
    with pytest.raises(IAMError, match=r"a01-003-01\.png: unreadable or truncated image"):
        ingest(tmp_path / "iam", tmp_path / "out" / "x.h5")
    assert list((tmp_path / "out").iterdir()) == []


def test_a_missing_line_image_is_named(tmp_path):
    build_iam(tmp_path / "iam", layout="lines")
    (tmp_path / "iam" / "lines" / "b02" / "b02-010" / "b02-010-00.png").unlink()
    with pytest.raises(IAMError, match=r"b02-010-00\.png: image file is missing"):
        ingest(tmp_path / "iam", tmp_path / "x.h5")


def test_a_truncated_form_image_is_named(tmp_path):
    build_iam(tmp_path / "iam", layout="forms")
    truncate_file(tmp_path / "iam" / "formsA-D" / "b02-010.png", keep=0.6)
    with pytest.raises(IAMError, match=r"formsA-D/b02-010\.png: unreadable or truncated"):
        ingest(tmp_path / "iam", tmp_path / "x.h5")


def test_characters_outside_the_charset_name_the_line(tmp_path):
    forms = sample_forms()
    forms[2].lines[0] = ("na\u00efve \u20ac5", True)
    build_iam(tmp_path / "lines", layout="lines", forms=forms)
    with pytest.raises(IAMError, match=r"lines\.txt: line b02-010-00: '\u00ef' \(U\+00EF\), '\u20ac'"):
        ingest(tmp_path / "lines", tmp_path / "x.h5")
    build_iam(tmp_path / "forms", layout="forms", forms=sample_forms()[:2] + forms[2:])
    with pytest.raises(IAMError, match=r"b02-010\.xml: line b02-010-00: '\u00ef'"):
        ingest(tmp_path / "forms", tmp_path / "x.h5")


def test_malformed_records_name_file_and_line_number(tmp_path):
    path = tmp_path / "lines.txt"
    path.write_text("# comment\na01-000u-00 ok 154 19 408 746 1661 89 A|MOVE\na01-000u-01 maybe 1 2 3\n")
    with pytest.raises(IAMError, match=r"lines\.txt line 3: expected '<id> <ok\|err>"):
        parse_lines_txt(path, Charset())


def test_malformed_xml_and_missing_form_images_are_named(tmp_path):
    build_iam(tmp_path / "iam", layout="forms")
    (tmp_path / "iam" / "formsA-D" / "c03-007.png").unlink()
    with pytest.raises(IAMError, match=r"c03-007\.xml: no image of form c03-007"):
        ingest(tmp_path / "iam", tmp_path / "x.h5")
    (tmp_path / "iam" / "xml" / "a01-003.xml").write_text("<form id='a01-003'><line id=")
    with pytest.raises(IAMError, match=r"a01-003\.xml: not a readable IAM form XML"):
        ingest(tmp_path / "iam", tmp_path / "x.h5")


def test_an_incomplete_official_split_is_refused(tmp_path):
    build_iam(tmp_path / "iam", layout="lines")
    (tmp_path / "iam" / "task" / "validationset2.txt").unlink()
    with pytest.raises(IAMError, match=r"task: has trainset\.txt but lacks validationset2\.txt"):
        ingest(tmp_path / "iam", tmp_path / "x.h5")


def test_cli_ingest_iam(tmp_path, capsys, both_tree):
    out = tmp_path / "iam.h5"
    assert main(["data", "ingest", "iam", "--source", str(both_tree), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    assert len(LineStore(out)) == 11
    assert main(["data", "info", str(out)]) == 0
    assert "iam=7" in capsys.readouterr().out


def test_cli_ingest_iam_reports_bad_input(tmp_path, capsys):
    assert main(["data", "ingest", "iam", "--source", str(tmp_path / "nope"), "--out", str(tmp_path / "x.h5")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("textrec: error:") and "nope: no such IAM folder" in err
