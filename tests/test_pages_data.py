"""Synthetic pages and the page store: one hand per page, boxes tight around each line's ink, atomic
and deterministic stores, and the segmenter finding the lines the renderer wrote."""

from __future__ import annotations

import json

import numpy as np
import pytest

from textrec.charset import DEFAULT_CHARSET
from textrec.cli import main
from textrec.data.pages import Page, PageConfig, PageRenderer, PageStore, PageWriter, synthesize_pages
from textrec.data.store import StoreError
from textrec.data.synth import LineRenderer, SynthConfig
from textrec.data.text import open_text_source
from textrec.segment import segment_page

SMALL = PageConfig(scale=0.5, lines=(3, 6))


@pytest.fixture(scope="module")
def renderer() -> PageRenderer:
    return PageRenderer(LineRenderer(SynthConfig(pen_p=0.35)), open_text_source(None, charset=DEFAULT_CHARSET), SMALL)


def test_a_page_holds_its_lines_top_to_bottom_with_boxes_tight_around_their_ink(renderer):
    for seed in range(6):
        page = renderer.render(np.random.default_rng(seed))
        h, w = page.image.shape
        assert 3 <= len(page.lines) <= 6 and page.text.count("\n") == len(page.lines) - 1
        tops = [b[1] for b, _ in page.lines]
        assert tops == sorted(tops) and len(set(tops)) == len(tops)
        for (x0, y0, x1, y1), text in page.lines:
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h and text.strip()
            crop = page.image[y0:y1, x0:x1]
            assert (crop < np.median(page.image) - 40).mean() > 0.02  # ink inside the box
        ink = page.image < np.median(page.image) - 60
        covered = np.zeros_like(ink)
        for (x0, y0, x1, y1), _ in page.lines:
            covered[y0:y1, x0:x1] = True
        assert ink[covered].sum() > 0.97 * ink.sum()  # (almost) no ink outside every box


def test_given_texts_are_written_in_order_by_one_hand(renderer):
    page = renderer.render(np.random.default_rng(3), ["first line here", "and the second", "third"])
    assert [t for _, t in page.lines] == ["first line here", "and the second", "third"]
    assert page.writer


def test_the_segmenter_finds_the_lines_of_synthetic_pages(renderer):
    exact = 0
    for seed in range(20):
        page = renderer.render(np.random.default_rng(100 + seed))
        exact += len(segment_page(page.image).lines) == len(page.lines)
    assert exact >= 14, exact  # 47 of 60 full-size pages exact (docs/benchmarks.md, "Pages"); misses merge touching lines


def test_bad_page_settings_are_named():
    with pytest.raises(ValueError, match="PageConfig.lines"):
        PageConfig(lines=(5, 2))
    with pytest.raises(ValueError, match="PageConfig.touch_p"):
        PageConfig(touch_p=2.0)
    with pytest.raises(ValueError, match="unknown page settings"):
        PageConfig.from_mapping({"line_count": 3})


def test_page_store_round_trips_and_refuses_line_stores(tmp_path, renderer):
    pages = [renderer.render(np.random.default_rng(s)) for s in range(3)]
    out = tmp_path / "pages.h5"
    with PageWriter(out, meta={"seed": 1}) as w:
        for k, p in enumerate(pages):
            w.add(p, split="train" if k else "test")
    store = PageStore(out)
    assert len(store) == 3 and store.splits == ["test", "train"] and list(store.indices("test")) == [0]
    for k, p in enumerate(pages):
        assert np.array_equal(store.image(k), p.image) and store.lines(k) == p.lines
    assert PageStore(out).info()["lines"] == sum(len(p.lines) for p in pages)
    with pytest.raises(StoreError, match="expected a 'textrec-lines' store, found format 'textrec-pages'"):
        from textrec.data.store import LineStore
        LineStore(out)


def test_a_failed_write_leaves_no_store_behind(tmp_path):
    out = tmp_path / "pages.h5"
    bad = Page(np.full((20, 30), 255, np.uint8), [((0, 0, 40, 10), "too wide")])
    with pytest.raises(ValueError, match="not inside the 30x20 page"), PageWriter(out) as w:
        w.add(bad, split="train")
    assert not out.exists() and not list(tmp_path.iterdir())


def test_synthesized_pages_do_not_depend_on_the_number_of_workers(tmp_path):
    a = synthesize_pages(6, tmp_path / "a.h5", seed=4, workers=1, page_config=SMALL, progress=False)
    b = synthesize_pages(6, tmp_path / "b.h5", seed=4, workers=2, page_config=SMALL, progress=False)
    sa, sb = PageStore(a), PageStore(b)
    assert sa.content_hash == sb.content_hash and len(sa) >= 6 and "test_unseen_font" in sa.splits
    assert sa.meta["page_config"]["scale"] == 0.5


def test_cli_synthesizes_shows_and_describes_a_page_store(tmp_path, capsys):
    out = tmp_path / "pages.h5"
    assert main(["data", "synth", "--pages", "4", "--out", str(out), "--workers", "1"]) == 0
    assert main(["data", "show", str(out), "--out", str(tmp_path / "pages.png"), "--n", "2"]) == 0
    assert (tmp_path / "pages.png").stat().st_size > 1000
    assert main(["data", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out.split("\n", 2)[-1])
    assert info["n"] >= 4 and info["kind"] == "pages" and info["lines"] > info["n"]
    assert main(["data", "synth", "--out", str(tmp_path / "x.h5")]) == 1  # neither --n nor --pages
