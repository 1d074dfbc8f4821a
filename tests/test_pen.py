"""The pen renderer: Hershey faces drawn as variable-width, wobbly strokes."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from textrec.charset import DEFAULT_CHARSET
from textrec.data.fonts import discover_fonts, split_fonts
from textrec.data.pen import PEN_FACES, PenFace, PenRenderer, load_face, split_pen_faces
from textrec.data.synth import LineRenderer, SynthConfig

CURSIVE = next(f for f in PEN_FACES if f.face == "cursive")
SANS = next(f for f in PEN_FACES if f.face == "futural")


def _ink(mask) -> np.ndarray:
    return np.asarray(mask) > 100


def _column_runs(ink: np.ndarray) -> int:
    """Runs of columns with ink: the marks that stand apart from left to right."""
    cols = ink.any(axis=0).astype(np.int8)
    return int((np.diff(np.concatenate([[0], cols])) == 1).sum())


@pytest.mark.parametrize("face", PEN_FACES, ids=lambda f: f.name)
def test_every_face_writes_the_whole_charset_without_touching_the_edge(face: PenFace) -> None:
    assert PenRenderer.covers(face, DEFAULT_CHARSET.chars)
    text = " ".join(DEFAULT_CHARSET.chars[k:k + 9] for k in range(1, len(DEFAULT_CHARSET.chars), 9))
    mask, xheight = PenRenderer(SynthConfig(glyph_affine=0.1)).draw(text, face, np.random.default_rng(0))
    ink = np.asarray(mask)
    assert mask.mode == "L" and ink.max() == 255
    assert np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]]).max() == 0
    assert 0.15 * mask.height < xheight < 0.6 * mask.height


def test_held_out_faces_are_whole_families_and_not_for_training() -> None:
    train, held = split_pen_faces()
    assert train and held
    assert not {f.family for f in train} & {f.family for f in held}
    assert {f.family for f in train} >= {"script", "sans"}  # training keeps a joined and a print hand
    assert set(PenRenderer(SynthConfig()).face_names) == {f.name for f in train}


def test_pen_draws_one_mark_per_glyph_and_grows_with_the_text() -> None:
    pen = PenRenderer(SynthConfig(word_space=(1.2, 1.4), pen_jitter=(0.0, 0.0), slant=(0.0, 0.0)))
    widths = []
    for n in (2, 4, 8):
        mask, _ = pen.draw(" ".join(["l"] * n), SANS, np.random.default_rng(3))
        assert _column_runs(_ink(mask)) == n
        widths.append(mask.width)
    assert widths[0] < widths[1] < widths[2]
    heavy, _ = pen.draw("WWW", SANS, np.random.default_rng(3))
    light, _ = pen.draw("...", SANS, np.random.default_rng(3))
    assert _ink(heavy).sum() > 5 * _ink(light).sum()


def test_pen_is_deterministic_for_a_seed_and_varies_with_it() -> None:
    pen = PenRenderer(SynthConfig())
    a, xa = pen.draw("the same words", CURSIVE, np.random.default_rng(5))
    b, xb = pickle.loads(pickle.dumps(pen)).draw("the same words", CURSIVE, np.random.default_rng(5))
    c, _ = pen.draw("the same words", CURSIVE, np.random.default_rng(6))
    assert xa == xb and np.array_equal(np.asarray(a), np.asarray(b))
    assert a.size != c.size or not np.array_equal(np.asarray(a), np.asarray(c))


def test_a_wider_pen_lays_more_ink() -> None:
    def ink(width: float) -> int:
        pen = PenRenderer(SynthConfig(pen_width=(width, width)))
        return int(_ink(pen.draw("minimum width", SANS, np.random.default_rng(2))[0]).sum())

    assert ink(0.1) > 1.8 * ink(0.04)


def test_joined_script_letters_run_together_within_words() -> None:
    def runs(join: float) -> int:
        config = SynthConfig(pen_join_p=join, tracking=(0.25, 0.3), pen_jitter=(0.0, 0.0),
                             glyph_jitter=0.0, glyph_size_jitter=0.0)
        return _column_runs(_ink(PenRenderer(config).draw("minimum", CURSIVE, np.random.default_rng(1))[0]))

    assert runs(1.0) == 1
    assert runs(0.0) >= 5


def test_tight_punctuation_gaps_narrow_the_line() -> None:
    text = 'he said , " that \'s it . "'
    loose = PenRenderer(SynthConfig(word_space=(1.0, 1.0), punct_gap_p=0.0))
    tight = PenRenderer(SynthConfig(word_space=(1.0, 1.0), punct_gap_p=1.0, punct_gap=(0.0, 0.0)))
    a = loose.draw(text, SANS, np.random.default_rng(0))[0]
    b = tight.draw(text, SANS, np.random.default_rng(0))[0]
    assert b.width < a.width - 40


def test_text_no_face_covers_falls_back_to_a_font() -> None:
    train, _ = split_fonts(discover_fonts())
    renderer = LineRenderer(SynthConfig(pen_p=1.0), train)
    assert renderer.pen.choose("caf\u00e9", np.random.default_rng(0)) is None
    _, name = renderer.render("caf\u00e9 au lait", np.random.default_rng(0))
    assert name in renderer.font_names
    _, name = renderer.render("cafe au lait", np.random.default_rng(0))
    assert name in renderer.pen.face_names


def test_held_out_renderer_writes_only_held_out_faces() -> None:
    _, held_fonts = split_fonts(discover_fonts())
    _, held_faces = split_pen_faces()
    renderer = LineRenderer(SynthConfig(pen_p=1.0), held_fonts, held_faces)
    names = {renderer.render("unseen hands", np.random.default_rng(i))[1] for i in range(12)}
    assert names <= {f.name for f in held_faces}


def test_unknown_face_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="no Hershey face 'nosuch'.*cursive"):
        load_face("nosuch")
