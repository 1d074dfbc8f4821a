"""The PNG grid of a line store."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textrec.cli import main
from textrec.data.show import COLUMN_WIDTH, LINE_HEIGHT, save_grid
from textrec.data.store import LineWriter


@pytest.fixture
def store(tmp_path: Path) -> Path:
    path = tmp_path / "lines.h5"
    rng = np.random.default_rng(0)
    with LineWriter(path, meta={}) as w:
        for i in range(20):
            image = np.full((40 + i, 200 + 40 * i), 230, np.uint8)
            image[10:30, 10:-10] = rng.integers(0, 80, size=(20, image.shape[1] - 20))
            split = "val" if i % 5 == 0 else "train"
            w.add(image, f"line number {i}", split=split, source="doc", writer=f"w{i}")
    return path


def test_grid_shows_the_lines_in_two_columns(store: Path, tmp_path: Path) -> None:
    out = save_grid(store, tmp_path / "grid.png", n=16)
    with Image.open(out) as grid:
        assert grid.format == "PNG"
        width, height = grid.size
        pixels = np.asarray(grid.convert("L"))
    assert 2 * COLUMN_WIDTH < width < 2 * COLUMN_WIDTH + 200
    assert 8 * LINE_HEIGHT < height < 8 * 4 * LINE_HEIGHT
    assert pixels.min() < 80 and np.median(pixels) > 200  # dark lines and text on a white page


def test_grid_of_one_split_and_of_more_lines_than_the_store(store: Path, tmp_path: Path) -> None:
    small = save_grid(store, tmp_path / "val.png", split="val", n=32)
    with Image.open(small) as grid:
        assert grid.size[0] < 2 * COLUMN_WIDTH  # 4 lines: one column
        assert grid.size[1] < 4 * 4 * LINE_HEIGHT
    with pytest.raises(KeyError, match="nosuch"):
        save_grid(store, tmp_path / "bad.png", split="nosuch")
    assert not (tmp_path / "bad.png").exists()


def test_grid_is_the_same_for_a_seed(store: Path, tmp_path: Path) -> None:
    a = save_grid(store, tmp_path / "a.png", n=5, seed=1).read_bytes()
    b = save_grid(store, tmp_path / "b.png", n=5, seed=1).read_bytes()
    c = save_grid(store, tmp_path / "c.png", n=5, seed=2).read_bytes()
    assert a == b and a != c


def test_cli_show(store: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.png"
    assert main(["data", "show", str(store), "--out", str(out), "--n", "4"]) == 0
    assert out.exists() and str(out) in capsys.readouterr().out
    assert main(["data", "show", str(tmp_path / "missing.h5"), "--out", str(out)]) == 1
    assert "missing.h5" in capsys.readouterr().err
