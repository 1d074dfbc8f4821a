"""Prose corpora: Debian's fortune collections as running text, corpus specs that mix sources by weight,
and ``decode.lm_corpus`` (a corpus's whole text in the character LM). The fortune folders here are
written by the tests in the ``fortune`` file format (passages separated by lines holding only ``%``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from textrec.data.text import (
    FORTUNE_COLLECTIONS,
    CorpusPart,
    MixedSource,
    ProseSource,
    WordFreqSource,
    corpus_key,
    corpus_lines,
    fortune_passages,
    open_text_source,
    parse_corpus,
)
from textrec.training import load_config
from textrec.training.loop import Trainer

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

LITERATURE = [
    "The quick brown fox jumps over the lazy dog while the farmer sleeps in the barn.",
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "A journey of a thousand miles begins with a single step. -- Lao Tsu",
]


def fortune_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "literature").write_text("\n%\n".join(LITERATURE) + "\n%\n", encoding="utf-8")
    (root / "literature.dat").write_bytes(b"\x00\x00\x00\x02\xff\xfe")  # strfile's index, never read
    (root / "art").write_text(
        "Art is long,\nand time is fleeting.\n%\n"
        "   /\\_/\\\n  ( o.o )\n   > ^ <\n%\n"  # ASCII art
        "if (x == 1) { return y; }\n%\n"  # code
        "Too short.\n%\n", encoding="utf-8")
    (root / "computers").write_text("Computers are not a collection read as prose here.\n", encoding="utf-8")
    return root


@pytest.fixture
def fortunes(tmp_path, monkeypatch) -> Path:
    root = fortune_dir(tmp_path / "fortunes")
    monkeypatch.setenv("TEXTREC_FORTUNES_DIR", str(root))
    return root


def test_fortune_passages_keep_prose_and_drop_art_code_and_scraps(fortunes):
    passages = fortune_passages()
    assert "computers" not in FORTUNE_COLLECTIONS and {"art", "literature"} <= set(FORTUNE_COLLECTIONS)
    assert sorted(passages) == sorted(LITERATURE + ["Art is long, and time is fleeting."])


def test_missing_fortunes_say_how_to_install_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTREC_FORTUNES_DIR", str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match=r"corpus 'fortunes': no fortune collections in .*none.*"
                                                r"apt-get install fortunes"):
        open_text_source("fortunes")


def test_fortunes_corpus_cuts_lines_from_the_running_text(fortunes):
    source = open_text_source("fortunes")
    assert isinstance(source, ProseSource) and source.describe() == "fortunes"
    text = " ".join(source.words)
    for seed in range(50):
        line = source.sample(np.random.default_rng(seed))
        assert line and line in f"{text} {text}"  # consecutive words of the prose (wrapping at its end)
    assert [source.sample(np.random.default_rng([3, i])) for i in range(20)] == \
           [source.sample(np.random.default_rng([3, i])) for i in range(20)]


def test_corpus_lines_hold_every_word_once_in_order(fortunes, tmp_path):
    lines = corpus_lines("fortunes")
    words = open_text_source("fortunes").words
    assert " ".join(lines).split() == words
    assert all(len(line) <= 47 or " " not in line for line in lines) and len(lines) > 1
    book = tmp_path / "book.txt"
    book.write_text("one two three four", encoding="utf-8")
    assert corpus_lines(f"wordfreq+{book}") == ["one two three four"]  # word statistics add no text
    with pytest.raises(ValueError, match="'wordfreq' has no running text"):
        corpus_lines("wordfreq")


def test_a_mixed_corpus_draws_each_source_by_its_weight(fortunes):
    source = open_text_source("wordfreq*3+fortunes")
    assert isinstance(source, MixedSource)
    assert isinstance(source.sources[0], WordFreqSource) and isinstance(source.sources[1], ProseSource)
    assert source.describe() == "wordfreq:en*0.75+fortunes*0.25"
    prose = (" ".join(source.sources[1].words) + " ") * 2  # lines may wrap around the end of the text
    lines = [source.sample(np.random.default_rng([5, i])) for i in range(800)]
    share = np.mean([line in prose for line in lines])
    assert 0.2 <= share <= 0.3  # a quarter from the fortunes (a word-statistics line is never a substring)
    assert lines == [source.sample(np.random.default_rng([5, i])) for i in range(800)]


def test_an_optional_part_is_read_where_installed_and_left_out_with_a_warning_where_not(fortunes, tmp_path,
                                                                                      monkeypatch):
    assert isinstance(open_text_source("wordfreq+fortunes?"), MixedSource)
    assert corpus_key("wordfreq+fortunes?") == "wordfreq+fortunes?"
    monkeypatch.setenv("TEXTREC_FORTUNES_DIR", str(tmp_path / "none"))
    with pytest.warns(UserWarning, match="optional part 'fortunes' is not installed"):
        assert isinstance(open_text_source("wordfreq+fortunes?"), WordFreqSource)
    # what was rendered without the fortunes is cached under another key than what is rendered with them
    assert corpus_key("wordfreq+fortunes?") == "wordfreq+fortunes? without fortunes"
    with pytest.raises(FileNotFoundError, match="none of its optional parts is installed"), pytest.warns(UserWarning):
        open_text_source("fortunes?")
    with pytest.raises(FileNotFoundError, match="no fortune collections"):
        open_text_source("wordfreq+fortunes")  # not optional: an error


def test_corpus_specs_and_their_errors(tmp_path):
    odd = tmp_path / "a+b*2.txt"
    odd.write_text("words", encoding="utf-8")
    assert parse_corpus(odd) == [CorpusPart(str(odd))]  # an existing path is one part, whatever its name
    assert parse_corpus("wordfreq") == [CorpusPart("wordfreq")]
    assert parse_corpus(" wordfreq*2 + fortunes?*0.5 ") == [CorpusPart("wordfreq", 2.0),
                                                              CorpusPart("fortunes", 0.5, optional=True)]
    for spec, message in [("wordfreq*0", "finite and > 0"), ("wordfreq*x", "'x' of 'wordfreq' is not a number"),
                          ("wordfreq+", "an empty part"), ("  ", "empty")]:
        with pytest.raises(ValueError, match=message):
            parse_corpus(spec)
    with pytest.raises(FileNotFoundError, match="'novel.txt': no such file, and not one of wordfreq, fortunes"):
        open_text_source("wordfreq+novel.txt")


# --- decode.lm_corpus in training ----------------------------------------------------------------------

ONLINE = ("--data.mode=online", "--data.train_lines=16", "--data.val_lines=4", "--data.test_lines=4",
          "--data.unseen_font_lines=4", "--loop.epochs=1", "--loop.threads=1")


def test_lm_corpus_joins_the_training_texts_in_the_character_lm(fortunes, tmp_path):
    cfg = load_config(CONFIGS / "smoke.yaml", [*ONLINE, "--decode.lm_corpus=fortunes"])
    trainer = Trainer(cfg, tmp_path / "run")
    try:
        texts = trainer.data.lm_texts()
    finally:
        trainer.close()
    prose = corpus_lines("fortunes")
    assert texts[-len(prose):] == prose and len(texts) > len(prose)  # the training texts come first


def test_lm_corpus_counts_show_in_the_fitted_lm(fortunes, tmp_path):
    from textrec.decoding import CharNgramLM

    cfg = load_config(CONFIGS / "smoke.yaml", [*ONLINE, "--decode.lm_corpus=fortunes"])
    plain = load_config(CONFIGS / "smoke.yaml", list(ONLINE))
    with_corpus, without = Trainer(cfg, tmp_path / "a"), Trainer(plain, tmp_path / "b")
    try:
        a = CharNgramLM.fit(with_corpus.data.lm_texts(), order=6, charset=with_corpus.charset)
        b = CharNgramLM.fit(without.data.lm_texts(), order=6, charset=without.charset)
    finally:
        with_corpus.close()
        without.close()
    assert a.log_prob("It was the best of t", "i") > b.log_prob("It was the best of t", "i")


def test_a_missing_lm_corpus_fails_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTREC_FORTUNES_DIR", str(tmp_path / "none"))
    cfg = load_config(CONFIGS / "smoke.yaml", [*ONLINE, "--decode.lm_corpus=fortunes"])
    with pytest.raises(ValueError, match=r"decode.lm_corpus=fortunes: corpus 'fortunes': no fortune collections"):
        Trainer(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_optional_lm_corpus_that_is_not_installed_leaves_the_training_texts_alone(tmp_path, monkeypatch):
    monkeypatch.setenv("TEXTREC_FORTUNES_DIR", str(tmp_path / "none"))
    plain = Trainer(load_config(CONFIGS / "smoke.yaml", list(ONLINE)), tmp_path / "a")
    try:
        expected = plain.data.lm_texts()
    finally:
        plain.close()
    with pytest.warns(UserWarning, match="optional part 'fortunes' is not installed"):
        trainer = Trainer(load_config(CONFIGS / "smoke.yaml", [*ONLINE, "--decode.lm_corpus=fortunes?"]),
                          tmp_path / "b")
    try:
        assert trainer.data.lm_texts() == expected
    finally:
        trainer.close()


def test_the_real_benchmark_adds_a_corpus_to_an_artifacts_lm_as_fitting_on_both_would(fortunes):
    import sys

    from textrec.decoding import CharNgramLM, WordLM

    sys.path.append(str(CONFIGS.parent / "benchmarks"))
    from real import with_corpus

    texts = ["the cat sat on the mat", "a dog ran far"]
    words = WordLM.build("texts", texts)
    base = CharNgramLM.fit(texts, order=4).with_words(words)
    merged = with_corpus(base, "fortunes")
    assert merged.counts == CharNgramLM.fit(texts + corpus_lines("fortunes"), order=4).counts
    assert merged.words is words and merged.order == 4
