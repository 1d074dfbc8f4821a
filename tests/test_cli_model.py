"""`textrec train`, `textrec evaluate` and `textrec predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures.lines import line_image
from fixtures.models import tiny_model_artifact
from fixtures.serving import line_png, make_model_pt
from PIL import Image

from textrec.cli import main
from textrec.data.store import LineWriter

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return tiny_model_artifact(tmp_path_factory.mktemp("model") / "model.pt")


@pytest.fixture
def images(tmp_path) -> list[Path]:
    paths = []
    for i in range(3):
        p = tmp_path / f"line{i}.png"
        Image.fromarray(line_image(width=120 + 50 * i, seed=i, height=40)).save(p)
        paths.append(p)
    return paths


def test_predict_prints_text_tab_confidence_per_image(model_path, images, capsys):
    assert main(["predict", "--model", str(model_path), *map(str, images)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    for line in lines:
        text, conf = line.rsplit("\t", 1)
        assert "\t" not in text and 0.0 <= float(conf) <= 1.0


def test_predict_through_the_installed_command(model_path, images):
    textrec = Path(sys.executable).parent / "textrec"
    done = subprocess.run([str(textrec), "predict", "--model", str(model_path), str(images[0])],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1 and "\t" in done.stdout


def test_predict_names_a_missing_image(model_path, tmp_path, capsys):
    assert main(["predict", "--model", str(model_path), str(tmp_path / "gone.png")]) == 1
    assert "gone.png: no such image file" in capsys.readouterr().err


def test_predict_names_an_unreadable_image(model_path, tmp_path, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["predict", "--model", str(model_path), str(bad)]) == 1
    assert "bad.png: not an image" in capsys.readouterr().err


def test_predict_names_a_missing_model(tmp_path, images, capsys):
    assert main(["predict", "--model", str(tmp_path / "none.pt"), str(images[0])]) == 1
    assert "none.pt" in capsys.readouterr().err


def _blank_files(folder: Path) -> list[Path]:
    """White, black, fully transparent and uniform grey line images."""
    images = {"white": Image.new("L", (240, 50), 255), "black": Image.new("L", (240, 50), 0),
              "transparent": Image.new("RGBA", (240, 50), (0, 0, 0, 0)),
              "grey": Image.new("RGB", (240, 50), (99, 99, 99))}
    for name, image in images.items():
        image.save(folder / f"{name}.png")
    return [folder / f"{name}.png" for name in images]


def test_predict_answers_blank_images_with_empty_text_and_confidence_zero(tmp_path, capsys):
    model = make_model_pt(tmp_path / "model.pt")  # a model that reads something into any ink
    line = tmp_path / "line.png"
    line.write_bytes(line_png(2))
    blanks = _blank_files(tmp_path)
    assert main(["predict", "--model", str(model), str(line), *map(str, blanks)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 5 and printed[0].split("\t")[0] != ""
    assert printed[1:] == ["\t0.0000"] * 4


def test_evaluate_scores_blank_images_as_empty_lines(tmp_path, capsys):
    model = make_model_pt(tmp_path / "model.pt")
    blanks = _blank_files(tmp_path)
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("".join(f"{p.name}\t\n" for p in blanks) + f"{blanks[0].name}\tsomething was here\n")
    assert main(["evaluate", "--model", str(model), "--labels", str(tsv), "--report", str(tmp_path / "rep"),
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"cer": 1.0, "wer": 1.0, "n": 5}  # only the last row misses
    rows = json.loads((tmp_path / "rep" / "report.json").read_text())["rows"]
    assert [(r["prediction"], r["confidence"]) for r in rows] == [("", 0.0)] * 5
    assert [r["cer"] for r in rows] == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_evaluate_tsv_json_has_exactly_cer_wer_n(model_path, images, tmp_path, capsys):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("".join(f"{p.name}\tline number {i}\n" for i, p in enumerate(images)))
    assert main(["evaluate", "--model", str(model_path), "--labels", str(tsv), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"cer", "wer", "n"} and data["n"] == 3 and data["cer"] >= 0


def test_evaluate_iam_lines_writes_a_report(model_path, tmp_path, capsys):
    root = tmp_path / "iam"
    (root / "lines.txt").parent.mkdir(parents=True)
    (root / "lines.txt").write_text("a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to|stop\n")
    img = root / "lines" / "a01" / "a01-000u" / "a01-000u-00.png"
    img.parent.mkdir(parents=True)
    Image.fromarray(line_image(width=300, seed=0, height=40)).save(img)
    assert main(["evaluate", "--model", str(model_path), "--iam-lines", str(root), "--report",
                 str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "1 lines, CER" in out and (tmp_path / "rep" / "report.html").is_file()


def test_evaluate_a_store_split(model_path, tmp_path, capsys):
    path = tmp_path / "lines.h5"
    with LineWriter(path) as w:
        for i in range(4):
            w.add(line_image(width=100, seed=i, height=40), f"text {i}", split=["train", "val", "test", "test"][i], source="unit")
    assert main(["evaluate", "--model", str(model_path), "--data", str(path), "--split", "test", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 2


def test_evaluate_bad_tsv_row_is_reported(model_path, tmp_path, capsys):
    tsv = tmp_path / "labels.tsv"
    tsv.write_text("no tab on this row\n")
    assert main(["evaluate", "--model", str(model_path), "--labels", str(tsv)]) == 1
    assert "labels.tsv, row 1" in capsys.readouterr().err


def test_evaluate_needs_exactly_one_source(model_path):
    with pytest.raises(SystemExit):
        main(["evaluate", "--model", str(model_path)])


def test_train_with_dotted_overrides(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out),
            f"--data.cache_dir={tmp_path / 'cache'}", "--data.train_lines=32", "--data.val_lines=4",
            "--data.test_lines=4", "--data.unseen_font_lines=4", "--loop.epochs=1", "--model.options.lstm_hidden=8"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "test_cer" in printed and "model.pt" in printed
    info = torch.load(out / "model.pt", weights_only=True)
    assert info["model_config"]["lstm_hidden"] == 8 and info["metrics"]["epochs"] == 1
    assert (out / "metrics.json").is_file()


def test_train_unknown_override_names_the_key(tmp_path, capsys):
    argv = ["train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path), "--loop.epoch=3"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "loop.epoch" in err and "epochs" in err


def test_other_commands_still_refuse_unknown_options():
    with pytest.raises(SystemExit):
        main(["data", "info", "x.h5", "--loop.epochs=3"])
