"""The line stem: one preprocessing for training, evaluation and serving, plus training augmentation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageFont

from textrec.stem import LineStem, StemConfig, crop_to_ink, to_grey


def render(text: str = "Handwriting 42", size: int = 32, margin: int = 10, ink: int = 20,
           paper: int = 240) -> np.ndarray:
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = font.getbbox(text)
    img = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), paper)
    ImageDraw.Draw(img).text((margin - left, margin - top), text, font=font, fill=ink)
    return np.asarray(img)


def test_output_is_float_with_the_configured_height_and_kept_aspect_ratio():
    img = render()
    x = LineStem()(img)
    crop = crop_to_ink(img)
    assert x.dtype == torch.float32 and x.dim() == 3 and x.shape[:2] == (1, 40)
    assert x.shape[2] == pytest.approx(crop.shape[1] * 40 / crop.shape[0], abs=1)
    assert LineStem(StemConfig(height=32))(img).shape[1] == 32


def test_ink_is_one_and_paper_zero_whatever_the_contrast():
    for ink, paper in [(0, 255), (90, 170), (150, 200)]:  # black pen, pencil, faint scan
        x = LineStem()(render(ink=ink, paper=paper))
        assert float(x.max()) == pytest.approx(1.0)
        assert float(x.median()) < 0.05  # most of a line is paper
        assert float((x > 0.5).float().mean()) > 0.05  # and the strokes survive


def test_crop_removes_margins_and_ignores_specks():
    tight = LineStem()(render(margin=2))
    wide = LineStem()(render(margin=60))
    assert torch.allclose(tight, wide, atol=1e-6)
    specked = render(margin=60).copy()
    specked[3, 3] = specked[-4, -4] = specked[5, -10] = 0  # dust far from the writing
    assert torch.allclose(LineStem()(specked), wide, atol=1e-6)
    uncropped = LineStem(StemConfig(crop_to_ink=False))(render(margin=60))
    assert float(uncropped.mean()) < 0.5 * float(wide.mean())  # mostly margin


def test_thin_faint_strokes_stay_visible_after_downscaling():
    img = np.full((200, 900), 250, np.uint8)
    for x0 in range(50, 850, 40):  # 1-px strokes in mid grey, 5x larger than the model input
        img[40:160, x0] = 170
        img[100, x0:x0 + 20] = 170
    x = LineStem()(img)
    assert float(x.max()) > 0.9
    columns = (x[0] > 0.5).any(dim=0)
    assert int(columns.sum()) >= 20  # every vertical stroke is still there


def test_width_limits():
    wide = np.full((20, 4000), 255, np.uint8)
    wide[5:15, 10:3990] = 0
    wide[5:15, 1000:1010] = 255
    assert LineStem(StemConfig(max_width=512))(wide).shape == (1, 40, 512)
    dot = np.full((30, 30), 255, np.uint8)
    dot[10:20, 14:16] = 0
    assert LineStem()(dot).shape[2] == 8


def test_blank_pages_give_blank_lines():
    for paper in (255, 128):
        x = LineStem()(np.full((50, 300), paper, np.uint8))
        assert x.shape[1] == 40 and float(x.abs().max()) < 1e-6
    noisy = (np.random.default_rng(0).normal(230, 3, (50, 300))).clip(0, 255).astype(np.uint8)
    assert float(LineStem()(noisy).max()) < 0.5  # sensor noise is not blown up into ink


def test_image_modes_and_dtypes_are_converted():
    grey = render()
    want = LineStem()(grey)
    rgb = Image.fromarray(grey).convert("RGB")
    rgba = Image.fromarray(np.dstack([np.zeros_like(grey)] * 3 + [255 - grey]), "RGBA")  # ink as alpha
    cases = [
        rgb, np.asarray(rgb), rgba, Image.fromarray(grey).convert("P"), grey[:, :, None],
        grey.astype(np.uint16) * 257, Image.fromarray(grey.astype(np.uint16) * 257),
        grey.astype(np.float32) / 255, Image.fromarray(grey).convert("LA"),
    ]
    for case in cases:
        got = LineStem()(case)
        assert got.shape == want.shape, type(case)
        assert torch.allclose(got, want, atol=0.05), getattr(case, "mode", getattr(case, "dtype", None))
    binary = LineStem()(Image.fromarray(grey).convert("1"))
    assert binary.shape[1] == 40 and float(binary.max()) == 1.0


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"expected \(H, W\) grey or \(H, W, 1\|3\|4\) colour pixels, got shape \(10,\)"):
        LineStem()(np.zeros(10, np.uint8))
    with pytest.raises(ValueError, match="empty"):
        LineStem()(np.zeros((0, 10), np.uint8))
    with pytest.raises(ValueError, match="NaN"):
        to_grey(np.full((4, 4), np.nan))
    with pytest.raises(TypeError, match="numpy array or PIL image, got str"):
        LineStem()("line.png")
    with pytest.raises(ValueError, match="height must be in"):
        StemConfig(height=4)
    with pytest.raises(ValueError, match="thickness must be in"):
        StemConfig(thickness=2.0)


def test_float_pil_images_are_refused_but_float_arrays_are_read_by_their_range():
    """One policy with decoding files for serving: a mode "F" image has no agreed grey scale, while
    an array's floats are in [0, 1] (or [0, 255] when any is above 1)."""
    grey = render()
    with pytest.raises(ValueError, match="line image: unsupported image mode 'F'"):
        LineStem()(Image.fromarray(grey.astype(np.float32) / 255))
    want = LineStem()(grey)
    assert torch.equal(LineStem()(grey.astype(np.float32) / 255), want)
    assert torch.equal(LineStem()(grey.astype(np.float64)), want)  # 0-255 floats
    assert np.array_equal(to_grey(grey.astype(np.float32) / 255), grey)


def test_grey_errors_name_the_input():
    with pytest.raises(ValueError, match="scan.png: cannot convert image mode 'LAB' to grey"):
        to_grey(Image.new("LAB", (4, 4)), "scan.png")
    with pytest.raises(ValueError, match="scan.png has NaN or infinite pixels"):
        to_grey(np.full((2, 2), np.inf), "scan.png")
    with pytest.raises(TypeError, match="scan.png: expected a numpy array or PIL image, got list"):
        to_grey([[0, 1]], "scan.png")  # type: ignore[arg-type]


def test_settings_round_trip_and_unknown_keys_fail():
    stem = LineStem(StemConfig(height=48, slant=0.2))
    again = LineStem.from_dict(stem.to_dict())
    assert again.config == stem.config
    with pytest.raises(ValueError, match=r"unknown keys \['colour'\]"):
        LineStem.from_dict({**stem.to_dict(), "colour": 1})


def test_augmentation_is_deterministic_for_a_seed_and_varies_across_seeds():
    img, stem = render(), LineStem()
    a = stem(img, np.random.default_rng(7), augment=True)
    b = stem(img, np.random.default_rng(7), augment=True)
    c = stem(img, np.random.default_rng(8), augment=True)
    assert torch.equal(a, b)
    assert a.shape != c.shape or not torch.equal(a, c)
    clean = stem(img, np.random.default_rng(7))  # augment off: the rng is not used
    assert torch.equal(clean, stem(img))


def test_augmented_lines_keep_their_ink_shape_and_range():
    img, stem = render(size=24), LineStem()
    clean_w = stem(img).shape[2]
    rng = np.random.default_rng(0)
    for _ in range(40):
        x = stem(img, rng, augment=True)
        assert x.shape[1] == 40 and 0.4 * clean_w < x.shape[2] < 2.0 * clean_w
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert float(x.max()) > 0.8 and float((x > 0.5).float().mean()) > 0.02  # never erased


def test_augmentation_strengths_of_zero_leave_the_line_as_it_was():
    off = StemConfig(slant=0, rotation=0, stretch=0, thickness=0, low_res=0, blur=0, noise=0, contrast=0)
    img = render()
    got = LineStem(off)(img, np.random.default_rng(0), augment=True)
    want = LineStem(off)(img)
    # resampled once more than a clean line, which may move the tight crop by a pixel or so
    assert abs(got.shape[2] - want.shape[2]) <= 0.06 * want.shape[2]
    assert float(got.mean()) == pytest.approx(float(want.mean()), abs=0.03)


def test_thin_strokes_on_textured_paper_are_found_and_cropped():
    """Sparse 1-px strokes, ~2 % of the pixels, 45 levels below blotchy paper: Otsu's threshold
    would split the paper texture in two and miss the writing."""
    rng = np.random.default_rng(0)
    blotches = np.asarray(Image.fromarray(rng.normal(0, 40, (6, 40)).astype(np.float32)).resize((800, 120)))
    textured = np.clip(195 + blotches.clip(-12, 12) + rng.normal(0, 2, (120, 800)), 0, 255).astype(np.uint8)
    clean = np.full((120, 800), 195, np.uint8)
    for img in (textured, clean):
        for x0 in range(200, 600, 25):
            img[45:75, x0] = 150
            img[60, x0:x0 + 12] = 150
    want, got = LineStem()(clean), LineStem()(textured)
    assert want.shape[2] == pytest.approx(412 * 40 / 30, abs=2)  # strokes span 412 x 30 px
    assert got.shape == want.shape
    assert float(got.max()) == pytest.approx(1.0)
    assert int((got[0] > 0.5).any(dim=0).sum()) >= 16


# --- deslanting -------------------------------------------------------------------------------------


def _strokes(shear: float, height: int = 60, width: int = 400, pen: int = 4) -> np.ndarray:
    """Word-like down-strokes ``pen`` px wide every 4 pens, leaning by ``shear`` (top right of the foot for > 0),
    joined by a stroke one pixel narrower."""
    img = np.full((height, width + int(abs(shear) * height) + 20), 245, np.uint8)
    for y in range(8, height - 8):
        shift = int(round(shear * (height - 8 - y))) + (0 if shear >= 0 else int(-shear * height))
        for x0 in range(10, width, 4 * pen):
            img[y, x0 + shift:x0 + shift + pen] = 20
    img[height // 2:height // 2 + pen - 1, 10:width] = 20  # a joining stroke, as in cursive
    return img


@pytest.mark.parametrize("shear", [0.5, 0.3, -0.25])
def test_deslant_finds_the_lean_of_the_strokes_and_stands_them_upright(shear):
    from textrec.stem import deslant, estimate_slant, ink_mask

    leaning = _strokes(shear)
    assert estimate_slant(ink_mask(leaning)) == pytest.approx(shear, abs=0.051)
    upright = deslant(leaning)
    assert abs(estimate_slant(ink_mask(upright))) <= 0.051
    # an upright down-stroke fills a column from top to foot; a leaning one crosses it
    assert (upright < 128).sum(axis=0).max() > 1.5 * (leaning < 128).sum(axis=0).max()


def test_deslant_leaves_upright_writing_alone_and_is_off_by_default():
    from textrec.stem import deslant

    upright = _strokes(0.0)
    assert np.array_equal(deslant(upright), upright)
    leaning = _strokes(0.4)
    plain, straightened = LineStem(StemConfig(height=32)), LineStem(StemConfig(height=32, deslant=1.0))
    assert straightened(leaning).shape[-1] < plain(leaning).shape[-1]  # the lean no longer widens the line
    assert torch.equal(plain(upright), straightened(upright))


def test_deslant_setting_is_checked_and_travels_with_the_stem():
    with pytest.raises(ValueError, match="deslant"):
        StemConfig(deslant=-0.1)
    stem = LineStem(StemConfig(deslant=0.8))
    assert LineStem.from_dict(stem.to_dict()).config.deslant == 0.8


def test_stroke_width_measures_the_pen_whatever_the_contrast():
    from textrec.stem import stroke_width

    plain = LineStem(StemConfig(height=32))
    bold, fine = (plain(_strokes(0.0, height=120, pen=w))[0].numpy() for w in (12, 4))
    assert stroke_width(bold) > 2.2 * stroke_width(fine)
    assert stroke_width(0.5 * bold) == pytest.approx(stroke_width(bold), rel=1e-4)  # faint ink, same pen
    assert stroke_width(np.zeros((32, 50), np.float32)) == 0.0


def test_stroke_setting_brings_broad_and_fine_pens_to_one_width():
    from textrec.stem import stroke_width

    plain, even = LineStem(StemConfig(height=32)), LineStem(StemConfig(height=32, stroke=1.6))
    lines = {w: _strokes(0.0, height=120, pen=w) for w in (4, 12)}
    widths = {w: (stroke_width(plain(img)[0].numpy()), stroke_width(even(img)[0].numpy())) for w, img in lines.items()}
    (fine_before, fine_after), (bold_before, bold_after) = widths[4], widths[12]
    assert bold_before / fine_before > 2.2
    assert bold_after / fine_after < 1.3  # the two pens now look alike to the model
    assert fine_after > fine_before and bold_after < bold_before
    x = even(_strokes(0.0, height=120, pen=12))
    assert x.shape == plain(_strokes(0.0, height=120, pen=12)).shape and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) > 0.9  # thinned strokes keep full-contrast ink
    assert not even(np.full((40, 200), 250, np.uint8)).any()  # no ink is still blank paper


def test_stroke_setting_is_checked_and_travels_with_the_stem():
    for bad in (-1.0, 0.2, 20.0):
        with pytest.raises(ValueError, match="stroke"):
            StemConfig(height=32, stroke=bad)
    stem = LineStem(StemConfig(height=32, stroke=1.6))
    assert LineStem.from_dict(stem.to_dict()).config.stroke == 1.6
    assert LineStem(StemConfig()).config.stroke == 0.0  # off unless a recipe asks for it


# --- scaling by the core ------------------------------------------------------------------------------


def _zoned(xheight: int = 20, rise: int = 10, gap: int = 8, strokes: int = 30) -> np.ndarray:
    """Letter-like 2-px strokes ``gap`` px apart filling an x-height band, every fourth with an ascender
    and every sixth with a descender ``rise`` px long: one writer's proportions."""
    img = np.full((xheight + 2 * rise + 20, gap * strokes + 20), 245, np.uint8)
    top = rise + 10
    for i in range(strokes):
        x = 10 + i * gap
        img[top:top + xheight, x:x + 2] = 20
        if i % 4 == 0:
            img[top - rise:top, x:x + 2] = 20
        if i % 6 == 3:
            img[top + xheight:top + xheight + rise, x:x + 2] = 20
    return img


def _core_rows(x: torch.Tensor) -> int:
    from textrec.stem import core_band

    top, bottom = core_band(x[0].numpy() > 0.5)
    return bottom - top


def test_core_setting_gives_long_and_short_ascenders_one_letter_size():
    """By ink height, a writer with long ascenders and descenders gets small letters; by the core, the
    x-height band fills the same rows whatever the zones around it."""
    short, long = _zoned(rise=6), _zoned(rise=30)
    plain, cored = LineStem(StemConfig(height=32)), LineStem(StemConfig(height=32, core=0.45))
    assert _core_rows(plain(short)) > 1.5 * _core_rows(plain(long))
    sizes = [_core_rows(cored(img)) for img in (short, long)]
    assert abs(sizes[0] - sizes[1]) <= 2 and abs(sizes[0] - 0.45 * 32) <= 3
    x = cored(long)
    assert x.shape[1] == 32 and float(x[0, :7].max()) > 0.5 and float(x[0, -7:].max()) > 0.5  # zones squeezed in
    assert cored(short).shape[2] == pytest.approx(cored(long).shape[2], rel=0.1)  # same letters, same width


def test_spacing_setting_brings_narrow_and_wide_writing_to_one_stroke_spacing():
    from textrec.stem import core_band, stroke_spacing

    narrow, wide = _zoned(gap=12), _zoned(gap=28)  # 0.6 and 1.4 core heights apart
    cored = LineStem(StemConfig(height=32, core=0.45))
    spaced = LineStem(StemConfig(height=32, core=0.45, spacing=1.0))
    assert cored(wide).shape[2] > 2 * cored(narrow).shape[2]  # the aspect ratio is kept
    for img in (narrow, wide):
        x = spaced(img)[0].numpy() > 0.5
        top, bottom = core_band(x)
        assert stroke_spacing(x[top:bottom]) / (bottom - top) == pytest.approx(1.0, rel=0.2)
    assert spaced(wide).shape[2] == pytest.approx(spaced(narrow).shape[2], rel=0.15)  # same strokes, same width


def test_core_and_spacing_keep_blank_lines_blank_and_augmented_lines_in_shape():
    stem = LineStem(StemConfig(height=32, core=0.45, spacing=1.0, stroke=1.6))
    assert not stem(np.full((40, 200), 250, np.uint8)).any()
    x = stem(render(), rng=np.random.default_rng(0), augment=True)
    assert x.shape[:2] == (1, 32) and 0.0 <= float(x.min()) and float(x.max()) <= 1.0 and float(x.max()) > 0.5


def test_core_and_spacing_settings_are_checked_and_travel_with_the_stem():
    for bad in ({"core": 0.1}, {"core": 0.9}, {"spacing": 1.0}, {"core": 0.45, "spacing": 5.0},
                {"narrowest": 0.5}, {"core": 0.45, "narrowest": 1.5}, {"core": 0.45, "narrowest": -0.2}):
        with pytest.raises(ValueError, match="core|spacing|narrowest"):
            StemConfig(height=32, **bad)
    stem = LineStem(StemConfig(height=32, core=0.45, spacing=1.1, narrowest=0.75))
    again = LineStem.from_dict(stem.to_dict()).config
    assert (again.core, again.spacing, again.narrowest) == (0.45, 1.1, 0.75)
    off = StemConfig()
    assert (off.core, off.spacing, off.narrowest) == (0.0, 0.0, 0.0)  # off unless a recipe asks for them


def test_narrowest_stops_the_spacing_from_squeezing_a_line_below_a_share_of_its_plain_width():
    """Strokes far apart for their core (here 1.6 core heights) are squeezed by the spacing; the floor
    keeps such a line at least ``narrowest`` of its width by plain scaling, and leaves lines that are
    not squeezed that far alone."""
    wide, narrow = _zoned(gap=32), _zoned(gap=10)
    plain = LineStem(StemConfig(height=32)).output_width(wide)
    squeezed = LineStem(StemConfig(height=32, core=0.45, spacing=0.6))
    floored = LineStem(StemConfig(height=32, core=0.45, spacing=0.6, narrowest=0.75))
    assert squeezed(wide).shape[-1] < 0.6 * plain
    assert floored(wide).shape[-1] == floored.output_width(wide) == round(0.75 * plain)
    narrow_plain = LineStem(StemConfig(height=32)).output_width(narrow)
    assert floored(narrow).shape[-1] == squeezed(narrow).shape[-1] > 0.75 * narrow_plain
    assert _core_rows(floored(wide)) == pytest.approx(_core_rows(squeezed(wide)), abs=1)  # rows as they were


@pytest.mark.parametrize("settings", [{}, {"stroke": 1.6}, {"core": 0.45}, {"core": 0.45, "spacing": 0.87},
                                      {"core": 0.45, "spacing": 0.87, "stroke": 1.6},
                                      {"core": 0.5, "spacing": 2.0, "max_width": 200}, {"deslant": 1.0},
                                      {"crop_to_ink": False, "core": 0.4},
                                      {"core": 0.45, "spacing": 0.6, "narrowest": 0.75, "stroke": 1.6}])
def test_output_width_is_the_width_the_stem_gives(settings):
    """Batches are sorted by the predicted width, so it must be the one normalising gives, for lines of
    any proportions and for blank ones."""
    stem = LineStem(StemConfig(height=32, **settings))
    lines = [_zoned(), _zoned(rise=30, gap=4), _zoned(xheight=8, gap=20, strokes=12), _zoned(strokes=90),
             np.full((40, 300), 250, np.uint8)]
    for line in lines:
        assert stem.output_width(line) == stem(line).shape[-1]
    assert stem.output_width(Image.fromarray(lines[1])) == stem(lines[1]).shape[-1]

