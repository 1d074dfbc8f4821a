"""The page segmenter: lines found, in order, with boxes where the lines are, on pages the tests make."""

from __future__ import annotations

import numpy as np
import pytest
from fixtures.pages import blob_page as _page
from PIL import Image

from textrec.segment import SegmentConfig, band_cuts, estimate_skew, segment_page


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_each_line_is_found_top_to_bottom_with_its_box():
    page, truth = _page([40, 100, 170, 230, 300])
    seg = segment_page(page)
    assert len(seg.lines) == 5
    for line, box in zip(seg.lines, truth, strict=True):
        assert _iou(line.box, box) > 0.8, (line.box, box)
    assert seg.size > 10


def test_crops_hold_their_own_line_only():
    page, truth = _page([40, 100, 170])
    seg = segment_page(page)
    for line, (x0, y0, x1, y1) in zip(seg.lines, truth, strict=True):
        assert line.image.shape == (line.box[3] - line.box[1], line.box[2] - line.box[0])
        assert (line.image < 128).sum() == pytest.approx((page[y0:y1, x0:x1] < 128).sum(), rel=0.02)


def test_a_descender_joined_to_the_line_below_is_cut_between_the_lines():
    page, _ = _page([40, 100, 160])
    page[60:115, 200:203] = 0  # one long stroke from line 1 into line 2
    seg = segment_page(page)
    assert len(seg.lines) == 3
    first, second = seg.lines[0].box, seg.lines[1].box
    assert first[3] <= second[1] + 12  # the shared stroke does not make one box swallow the other
    assert first[3] - first[1] < 55 and second[3] - second[1] < 55


def test_a_skewed_page_is_stood_upright_and_its_boxes_map_back_onto_the_page():
    page, truth = _page([60, 130, 200, 270], width=700, height=420)
    for angle in (2.5, -3.0):
        tilted = np.asarray(Image.fromarray(page).rotate(angle, fillcolor=240, resample=Image.Resampling.BILINEAR))
        seg = segment_page(tilted)
        assert seg.skew == pytest.approx(-angle, abs=0.3)
        assert len(seg.lines) == 4
        for line in seg.lines:  # every box holds ink of the tilted page and stays on it
            x0, y0, x1, y1 = line.box
            assert 0 <= x0 < x1 <= tilted.shape[1] and 0 <= y0 < y1 <= tilted.shape[0]
            assert (tilted[y0:y1, x0:x1] < 128).sum() > 0.8 * (line.image < 128).sum()
        centres = [(ln.box[1] + ln.box[3]) / 2 for ln in seg.lines]
        assert centres == sorted(centres)


def test_a_page_without_ink_has_no_lines():
    for blank in (np.full((300, 400), 255, np.uint8), np.zeros((300, 400), np.uint8)):
        assert segment_page(blank).lines == []


def test_one_line_is_one_line():
    page, truth = _page([20], height=80)
    (line,) = segment_page(page).lines
    assert _iou(line.box, truth[0]) > 0.8


def test_a_stray_mark_is_not_a_line():
    page, _ = _page([40, 100, 170])
    page[380:384, 300:304] = 0
    assert len(segment_page(page).lines) == 3


def test_skew_and_band_helpers_on_known_inputs():
    m = np.zeros((200, 400), bool)
    m[50:60, 20:380] = m[120:130, 20:380] = True
    assert estimate_skew(m) == 0.0
    p = np.zeros(100)
    p[10:20] = p[60:70] = 10
    (cut,) = band_cuts(p, 10.0)
    assert 20 <= cut <= 60


def test_bad_input_and_settings_are_named():
    with pytest.raises(ValueError, match="uint8"):
        segment_page(np.zeros((10, 10), np.float32))
    with pytest.raises(ValueError, match="max_skew"):
        SegmentConfig(max_skew=90)
    with pytest.raises(ValueError, match="min_ink"):
        SegmentConfig(min_ink=1.5)
