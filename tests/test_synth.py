"""Handwriting fonts, the line renderer and synthetic line stores."""

from __future__ import annotations

import pickle
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from fontTools.ttLib import TTFont

from textrec.charset import DEFAULT_CHARSET
from textrec.cli import main
from textrec.data.fonts import (
    FontError,
    check_font,
    discover_fonts,
    held_out_families,
    pypi_font_files,
    split_fonts,
)
from textrec.data.store import LineStore
from textrec.data.synth import _LEVER_FIELDS, LineRenderer, SynthConfig, split_plan, synthesize
from textrec.data.text import iam_spacing

REPO = Path(__file__).resolve().parents[1]

N = 30


@pytest.fixture(scope="module")
def fonts():
    return discover_fonts()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "lines.h5"
    return synthesize(N, out, seed=5, workers=1, progress=False)


def _edited_font(tmp_path: Path, name: str, edit) -> Path:
    """A copy of an installed font with its character map changed by ``edit(cmap)``."""
    source = next(p for p in pypi_font_files() if p.name.startswith("Delius"))
    font = TTFont(str(source))
    for table in font["cmap"].tables:
        if table.isUnicode():
            edit(table.cmap)
    out = tmp_path / name
    font.save(str(out))
    return out


# --- fonts ---------------------------------------------------------------------------------------


def test_discovered_fonts_have_unique_stable_names_and_several_families(fonts) -> None:
    names = [f.name for f in fonts]
    assert len(names) == len(set(names))
    assert len({f.family for f in fonts}) >= 5
    assert "caveat-bold" in names and "kalam-light" in names  # variable instances and static styles
    assert [f.name for f in discover_fonts()] == names


def test_held_out_fonts_are_about_a_fifth_of_the_families_and_stable(fonts) -> None:
    train, held = split_fonts(fonts)
    families = {f.family for f in fonts}
    held_families = {f.family for f in held}
    assert held_families and not held_families & {f.family for f in train}
    assert abs(len(held_families) - 0.2 * len(families)) <= 1
    assert held_out_families(sorted(families, reverse=True)) == held_families
    assert held_out_families(["only"]) == set()
    assert len(held_out_families(["a", "b"])) == 1


def test_check_font_rejects_capitals_only_fonts(tmp_path: Path) -> None:
    def lower_to_upper(cmap: dict[int, str]) -> None:
        for c in "abcdefghijklmnopqrstuvwxyz":
            cmap[ord(c)] = cmap[ord(c.upper())]

    with pytest.raises(FontError, match=r"caps\.ttf.*capitals"):
        check_font(_edited_font(tmp_path, "caps.ttf", lower_to_upper))


def test_check_font_rejects_fonts_missing_a_character(tmp_path: Path) -> None:
    path = _edited_font(tmp_path, "noamp.ttf", lambda cmap: cmap.pop(ord("&"), None))
    with pytest.raises(FontError, match=r"noamp\.ttf.*no glyphs for '&'"):
        check_font(path)


def test_a_bad_font_file_in_a_fonts_dir_is_skipped_with_a_warning(tmp_path: Path, fonts) -> None:
    (tmp_path / "broken.ttf").write_bytes(b"this is not a font")
    with pytest.warns(UserWarning, match=r"broken\.ttf.*not a readable"):
        found = discover_fonts([tmp_path])
    assert [f.name for f in found] == [f.name for f in fonts]


def test_a_fonts_dir_must_exist_and_hold_fonts(tmp_path: Path) -> None:
    with pytest.raises(FontError, match="nowhere.*not a folder"):
        discover_fonts([tmp_path / "nowhere"])
    with pytest.raises(FontError, match="no .ttf, .otf"):
        discover_fonts([tmp_path])


def test_fonts_from_a_fonts_dir_are_added(tmp_path: Path) -> None:
    _edited_font(tmp_path, "Mine.ttf", lambda cmap: None)
    found = discover_fonts([tmp_path], system=False)
    assert [f.name for f in found] == ["delius-regular"]
    assert Path(found[0].path).parent == tmp_path


# --- renderer ------------------------------------------------------------------------------------


def test_renderer_draws_dark_ink_on_light_paper(fonts) -> None:
    renderer = LineRenderer(SynthConfig(), fonts)
    for i in range(8):
        image, font = renderer.render("Dark ink, light paper: 42!", np.random.default_rng(i))
        assert image.dtype == np.uint8 and image.ndim == 2
        assert 30 <= image.shape[0] <= 140 and image.shape[1] > 2 * image.shape[0]
        assert np.median(image) > np.percentile(image, 1) + 60  # mostly paper, some much darker ink
        assert font in renderer.font_names


def test_renderer_is_deterministic_and_picklable(fonts) -> None:
    renderer = LineRenderer(SynthConfig(), fonts)
    a, fa = renderer.render("the same line", np.random.default_rng(11))
    b, fb = pickle.loads(pickle.dumps(renderer)).render("the same line", np.random.default_rng(11))
    c, _ = renderer.render("the same line", np.random.default_rng(12))
    assert fa == fb and np.array_equal(a, b)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_renderer_refuses_empty_text(fonts) -> None:
    with pytest.raises(ValueError, match="empty"):
        LineRenderer(SynthConfig(), fonts).render("   ", np.random.default_rng(0))


def test_synth_config_checks_its_ranges() -> None:
    with pytest.raises(ValueError, match="slant"):
        SynthConfig(slant=(0.3, -0.3))
    with pytest.raises(ValueError, match="blur_p"):
        SynthConfig(blur_p=1.5)


# --- synthesize ------------------------------------------------------------------------------------


def test_split_plan_has_every_split() -> None:
    plan = split_plan(100, seed=0)
    assert plan.count("val") == plan.count("test") == 5 and plan.count("train") == 90
    assert plan.count("test_unseen_font") == 5 and plan[-5:] == ["test_unseen_font"] * 5
    assert split_plan(3, seed=0)[:3].count("train") == 1


def test_store_has_every_split_and_out_of_font_lines_use_held_out_fonts(store_path: Path, fonts) -> None:
    store = LineStore(store_path)
    info = store.info()
    assert info["splits"] == {"train": 26, "val": 2, "test": 2, "test_unseen_font": 4}
    assert info["sources"] == {"synth": len(store)}
    train, held = split_fonts(fonts)
    held_names, train_names = {f.name for f in held}, {f.name for f in train}
    for i in range(len(store)):
        assert store.writers[i] in (held_names if store.split(i) == "test_unseen_font" else train_names)
        assert DEFAULT_CHARSET.unknown(store.text(i)) == []
        assert store.image(i).shape == (store.heights[i], store.widths[i])
    meta = store.meta
    assert meta["seed"] == 5 and meta["corpus"] == "wordfreq:en"
    assert meta["config"]["slant"] == list(SynthConfig().slant)
    assert set(meta["fonts"]["held_out"]) == held_names


def test_content_is_the_same_for_a_seed_whatever_the_workers(store_path: Path, tmp_path: Path) -> None:
    two = synthesize(N, tmp_path / "two.h5", seed=5, workers=2, progress=False)
    other = synthesize(N, tmp_path / "other.h5", seed=6, workers=1, progress=False)
    assert LineStore(two).content_hash == LineStore(store_path).content_hash
    assert LineStore(other).content_hash != LineStore(store_path).content_hash


def test_synthesize_draws_text_from_a_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("zebra quartz jukebox " * 50, encoding="utf-8")
    out = synthesize(8, tmp_path / "c.h5", seed=1, workers=1, corpus=corpus, progress=False)
    store = LineStore(out)
    assert store.meta["corpus"] == "file:corpus.txt"
    assert all(set(t.split()) <= {"zebra", "quartz", "jukebox"} for t in store.texts)


def test_synthesize_rejects_a_bad_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        synthesize(0, tmp_path / "none.h5", progress=False)
    assert not (tmp_path / "none.h5").exists()


def test_cli_synth_writes_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.h5"
    assert main(["data", "synth", "--n", "6", "--out", str(out), "--seed", "2", "--workers", "1"]) == 0
    assert LineStore(out).meta["seed"] == 2
    assert main(["data", "info", str(out)]) == 0
    assert "test_unseen_font=4" in capsys.readouterr().out


def test_cli_synth_reports_a_missing_fonts_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "synth", "--n", "4", "--out", str(tmp_path / "x.h5"),
                 "--fonts-dir", str(tmp_path / "nofonts")])
    assert code == 1
    assert "nofonts" in capsys.readouterr().err


def test_renderer_never_clips_a_glyph(fonts) -> None:
    text = " ".join(DEFAULT_CHARSET.chars[k:k + 9] for k in range(1, len(DEFAULT_CHARSET.chars), 9))
    for glyph_mode in (0.0, 1.0):
        renderer = LineRenderer(SynthConfig(glyph_mode_p=glyph_mode, bold_p=1.0), fonts)
        for spec in fonts:
            mask, _ = renderer._draw(text, spec, np.random.default_rng(0))
            ink = np.asarray(mask)
            edges = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
            assert edges.max() == 0, f"{spec.name} touches the canvas edge"


def test_per_glyph_affine_never_clips_a_glyph(fonts) -> None:
    text = " ".join(DEFAULT_CHARSET.chars[k:k + 9] for k in range(1, len(DEFAULT_CHARSET.chars), 9))
    renderer = LineRenderer(SynthConfig(glyph_mode_p=1.0, glyph_affine=0.12, bold_p=1.0), fonts)
    for spec in fonts[::3]:
        ink = np.asarray(renderer._draw(text, spec, np.random.default_rng(1))[0])
        edges = np.concatenate([ink[0], ink[-1], ink[:, 0], ink[:, -1]])
        assert edges.max() == 0, f"{spec.name} touches the canvas edge"


# --- levers towards pen on paper -------------------------------------------------------------------

LEVERS = {
    "elastic": ({}, {"elastic_p": 1.0, "elastic_alpha": (1.5, 2.0)}),
    "morph": ({}, {"morph_p": 1.0}),
    "width_var": ({}, {"width_var_p": 1.0}),
    "glyph_affine": ({"glyph_mode_p": 1.0}, {"glyph_mode_p": 1.0, "glyph_affine": 0.08}),
    "pen": ({}, {"pen_p": 1.0}),
    "punct_gap": ({}, {"punct_gap_p": 1.0}),
}


@pytest.mark.parametrize("lever", sorted(LEVERS))
def test_each_lever_is_deterministic_and_changes_the_line_when_on(lever: str, fonts) -> None:
    off, on = (LineRenderer(SynthConfig(**kw), fonts) for kw in LEVERS[lever])
    text = 'He said , " that \'s it . " Then 42 more.'
    for seed in range(3):
        base, base_font = off.render(text, np.random.default_rng(seed))
        a, font = on.render(text, np.random.default_rng(seed))
        b, _ = on.render(text, np.random.default_rng(seed))
        assert np.array_equal(a, b)
        assert np.array_equal(base, off.render(text, np.random.default_rng(seed))[0])
        assert a.shape != base.shape or not np.array_equal(a, base), f"{lever} left seed {seed} unchanged"
        assert a.dtype == np.uint8 and a.ndim == 2 and a.shape[1] > 2 * a.shape[0]
        assert np.median(a) > np.percentile(a, 0.1) + 60  # paper with some much darker ink
        assert font.startswith("hershey-") == (lever == "pen")


def test_levers_at_zero_ignore_their_strengths(fonts) -> None:
    strengths = SynthConfig(morph_px=(3, 3), elastic_alpha=(9.0, 9.0), elastic_sigma=(3.0, 3.0),
                            punct_gap=(0.0, 0.0), pen_width=(0.3, 0.3), pen_pressure=(0.9, 0.9),
                            pen_jitter=(0.2, 0.2), pen_join_p=0.0)
    plain, tuned = LineRenderer(SynthConfig(), fonts), LineRenderer(strengths, fonts)
    for seed in range(4):
        a = plain.render("the levers are off , so nothing moves .", np.random.default_rng(seed))
        b = tuned.render("the levers are off , so nothing moves .", np.random.default_rng(seed))
        assert a[1] == b[1] and np.array_equal(a[0], b[0])
    assert strengths.recipe() != SynthConfig().recipe()
    assert _LEVER_FIELDS <= set(asdict(SynthConfig()))  # the recipe leaves out only real fields


def test_tight_gaps_put_iam_detached_punctuation_against_the_word(fonts) -> None:
    words = 'he said , " that \'s it . "'.split(" ")
    renderer = LineRenderer(SynthConfig(glyph_mode_p=0.0, punct_gap_p=1.0, punct_gap=(0.0, 0.0)), fonts)
    items, _ = renderer._layout(" ".join(words), fonts[0], np.random.default_rng(0))
    assert [it.text for it in items] == words
    for k, tight in enumerate([False, True, False, True, True, False, True, True]):
        gap = items[k + 1].x - (items[k].x + items[k].advance)
        assert (gap == pytest.approx(0.0)) == tight, (k, gap)


def test_levers_keep_the_text_labels_of_a_store(store_path: Path, tmp_path: Path) -> None:
    config = SynthConfig(pen_p=0.5, elastic_p=0.5, morph_p=0.5, width_var_p=0.5, glyph_affine=0.05,
                         punct_gap_p=0.5)
    out = synthesize(N, tmp_path / "levers.h5", seed=5, workers=1, config=config, progress=False)
    store, plain = LineStore(out), LineStore(store_path)
    assert store.texts == plain.texts
    assert store.content_hash != plain.content_hash
    writers = set(store.writers)
    assert any(w.startswith("hershey-") for w in writers) and not all(w.startswith("hershey-") for w in writers)
    held = set(store.meta["pen_faces"]["held_out"])
    for i in range(len(store)):
        if store.writers[i].startswith("hershey-"):
            assert (store.writers[i] in held) == (store.split(i) == "test_unseen_font")
    assert store.meta["config"]["pen_p"] == 0.5


def test_iam_spacing_in_the_recipe_spaces_the_texts(tmp_path: Path) -> None:
    out = synthesize(6, tmp_path / "iam.h5", seed=2, workers=1, config=SynthConfig(iam_spacing_p=1.0),
                     progress=False)
    store = LineStore(out)
    assert store.meta["corpus"] == "wordfreq:en+iam_spacing:1"
    assert all(iam_spacing(t) == t for t in store.texts)


# --- the recipe in a training config -----------------------------------------------------------------


def test_data_synth_overrides_the_recipe_and_names_a_new_pool(tmp_path: Path) -> None:
    from textrec.training.config import load_config
    from textrec.training.data import pool_path

    plain, levers = load_config(None), load_config(None, ["--data.synth.pen_p=0.3",
                                                          "--data.synth.elastic_alpha=[1, 2]"])
    assert SynthConfig.from_mapping(levers.data.synth) == SynthConfig(pen_p=0.3, elastic_alpha=(1.0, 2.0))
    assert pool_path(plain, tmp_path) != pool_path(levers, tmp_path)
    assert pool_path(plain, tmp_path) == pool_path(load_config(None, ["--data.synth.pen_p=0"]), tmp_path)


def test_an_unknown_data_synth_key_is_rejected_by_name() -> None:
    from textrec.config import ConfigError
    from textrec.training.config import load_config

    with pytest.raises(ConfigError, match=r"data\.synth\.pen_q.*valid keys.*pen_p"):
        load_config(None, ["--data.synth.pen_q=0.3"])
    with pytest.raises(ConfigError, match="pen_p is a probability"):
        load_config({"data": {"synth": {"pen_p": 2}}})


def tiny_pool(cache: Path, train_lines: int = 45) -> tuple:
    """(a training config whose pool is a few dozen lines rendered on one core, where that pool goes)."""
    from textrec.training.config import load_config
    from textrec.training.data import pool_path

    evals = max(3, train_lines // 18)
    cfg = load_config(REPO / "configs" / "smoke.yaml",
                      [f"--data.train_lines={train_lines}", f"--data.val_lines={evals}", f"--data.test_lines={evals}",
                       f"--data.cache_dir={cache}", "--data.synth_workers=1", "--loop.progress=false"])
    return cfg, pool_path(cfg, cache)


def test_two_runs_wanting_the_same_pool_render_it_once(tmp_path: Path) -> None:
    import threading

    from textrec.training.data import _render_pool

    cfg, path = tiny_pool(tmp_path, train_lines=90)
    said: list[str] = []
    runs = [threading.Thread(target=_render_pool, args=(cfg, path, said.append)) for _ in range(2)]
    for run in runs:  # the lock is flock on a file opened per call: two threads contend as two processes do
        run.start()
    for run in runs:
        run.join()
    said_first = [m.split(" ")[0] for m in said]
    assert said_first.count("rendering") == 1 and said_first.count("using") == 1, said
    assert len(LineStore(path)) >= 100  # whole: 100 lines asked for, plus the held-out fonts


def test_a_run_waiting_for_another_to_render_its_pool_says_so(tmp_path: Path) -> None:
    import threading
    import time

    from textrec.io import FileLock
    from textrec.training.data import _render_pool

    cfg, path = tiny_pool(tmp_path)
    said: list[str] = []
    with FileLock(path.with_name(f".{path.name}.lock")):  # another process is rendering it
        run = threading.Thread(target=_render_pool, args=(cfg, path, said.append))
        run.start()
        deadline = time.monotonic() + 30
        while not said and time.monotonic() < deadline:
            time.sleep(0.05)
        assert said and said[0].startswith("waiting for another process to finish rendering the synthetic pool")
        assert run.is_alive() and not path.exists()
    run.join()
    assert [m.split(" ")[0] for m in said] == ["waiting", "rendering"] and path.is_file()


def test_a_rendered_pool_is_used_without_writing_beside_it(tmp_path: Path) -> None:
    """A pool on a read-only volume must stay usable: using one writes nothing into its folder."""
    from textrec.training.data import _render_pool

    cfg, path = tiny_pool(tmp_path / "cache")
    _render_pool(cfg, path, lambda _: None)
    for lock in path.parent.glob(".*.lock"):
        lock.unlink()  # as a pool copied onto a volume has no lock file beside it
    said: list[str] = []
    _render_pool(cfg, path, said.append)
    assert said == [f"using the synthetic pool {path}"]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
