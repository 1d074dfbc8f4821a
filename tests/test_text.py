"""Sentence sources: IAM-like lines, inside the charset, deterministic for a seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from textrec.charset import DEFAULT_CHARSET
from textrec.data.store import LineWriter
from textrec.data.text import (
    IamSpacing,
    LineLength,
    StoreTextSource,
    TextFileSource,
    TextSource,
    WordFreqSource,
    clean_word,
    detached_gaps,
    iam_spacing,
    open_text_source,
    wrap_line,
)


@pytest.fixture(scope="module")
def wordfreq_lines() -> list[str]:
    source = WordFreqSource()
    return [source.sample(np.random.default_rng([7, i])) for i in range(1500)]


def test_wordfreq_lines_have_iam_like_lengths(wordfreq_lines: list[str]) -> None:
    lengths = np.array([len(t) for t in wordfreq_lines])
    words = np.array([len(t.split()) for t in wordfreq_lines])
    assert 39 <= lengths.mean() <= 48
    assert np.percentile(lengths, 5) >= 18 and np.percentile(lengths, 95) <= 66
    assert lengths.max() <= 70
    assert 6.5 <= words.mean() <= 9.5


def test_wordfreq_lines_are_in_the_charset_and_normalised(wordfreq_lines: list[str]) -> None:
    for text in wordfreq_lines:
        assert DEFAULT_CHARSET.unknown(text) == [], text
        assert text == DEFAULT_CHARSET.normalise(text), text


def test_wordfreq_lines_have_capitals_digits_and_punctuation(wordfreq_lines: list[str]) -> None:
    chars = "".join(wordfreq_lines)
    for group in ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "0123456789", ".,", "\"'", "()", "?!", ";:", "-", "&"):
        assert any(c in chars for c in group), f"no {group!r} in {len(wordfreq_lines)} lines"
    capitalised = sum(t[0].isupper() for t in wordfreq_lines) / len(wordfreq_lines)
    assert 0.15 < capitalised < 0.8  # lines start mid-sentence as well as at sentence starts
    assert sum(c.isdigit() for c in chars) / len(chars) < 0.03
    assert len({w.strip(".,;:!?\"'()").lower() for t in wordfreq_lines for w in t.split()}) > 2000


def test_wordfreq_source_is_deterministic_for_a_seed() -> None:
    source = WordFreqSource()
    first = [source.sample(np.random.default_rng([3, i])) for i in range(20)]
    again = [source.sample(np.random.default_rng([3, i])) for i in range(20)]
    other = [source.sample(np.random.default_rng([4, i])) for i in range(20)]
    assert first == again
    assert first != other


def test_sources_follow_the_protocol(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("one two three", encoding="utf-8")
    assert isinstance(WordFreqSource(), TextSource)
    assert isinstance(TextFileSource(corpus), TextSource)


def test_wrap_line_stops_before_the_target_and_keeps_a_long_first_word() -> None:
    words = ["alpha", "beta", "gamma", "delta"]
    assert wrap_line(words, 0, 11) == "alpha beta"
    assert wrap_line(words, 3, 11) == "delta alpha"  # wraps around the end
    assert wrap_line(["extraordinarily"], 0, 5) == "extraordinarily"


def test_clean_word_strips_accents_and_drops_foreign_words() -> None:
    assert clean_word("caf\u00e9") == "cafe"
    assert clean_word("\u201cna\u00efve\u201d") == '"naive"'
    assert clean_word("\u6771\u4eac") is None
    assert clean_word("50\u20ac") is None


def test_text_file_source_cuts_iam_like_lines(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.txt"
    words = [f"word{i % 97}" for i in range(3000)]
    corpus.write_text("Caf\u00e9 \u6771\u4eac\n" + " ".join(words) + "\n", encoding="utf-8")
    source = TextFileSource(corpus)
    assert source.words[0] == "Cafe" and source.skipped_words == 1
    lines = [source.sample(np.random.default_rng([1, i])) for i in range(300)]
    lengths = np.array([len(t) for t in lines])
    assert 38 <= lengths.mean() <= 48 and lengths.max() <= LineLength().high
    assert all(set(t.split()) <= set(source.words) for t in lines)
    assert lines == [source.sample(np.random.default_rng([1, i])) for i in range(300)]
    assert source.describe() == "file:corpus.txt"


def test_text_file_source_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        TextFileSource(tmp_path / "missing.txt")
    foreign = tmp_path / "foreign.txt"
    foreign.write_text("\u6771\u4eac \u0416\u0416", encoding="utf-8")
    with pytest.raises(ValueError, match="foreign.txt.*no words"):
        TextFileSource(foreign)
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(ValueError, match="binary.txt.*UTF-8"):
        TextFileSource(binary)


def test_store_text_source_uses_only_the_train_split(tmp_path: Path) -> None:
    path = tmp_path / "lines.h5"
    blank = np.full((8, 16), 255, np.uint8)
    with LineWriter(path, meta={}) as w:
        for k in range(5):
            w.add(blank, f"train line {k}", split="train", source="iam")
        w.add(blank, "a test line", split="test", source="iam")
    source = open_text_source(path)
    assert isinstance(source, StoreTextSource)
    texts = {source.sample(np.random.default_rng(i)) for i in range(60)}
    assert texts == {f"train line {k}" for k in range(5)}
    with pytest.raises(KeyError, match="validation"):
        StoreTextSource(path, split="validation")


def test_open_text_source_picks_by_argument(tmp_path: Path) -> None:
    corpus = tmp_path / "c.txt"
    corpus.write_text("some words here", encoding="utf-8")
    assert isinstance(open_text_source(None), WordFreqSource)
    assert isinstance(open_text_source(corpus), TextFileSource)


# --- IAM's punctuation spacing ---------------------------------------------------------------------


def test_iam_spacing_detaches_punctuation_and_s_but_not_abbreviations_or_numbers() -> None:
    assert iam_spacing('He said, "that\'s it." Mr. Lee paid 3.50 (cash)...') == \
        'He said , " that \'s it . " Mr. Lee paid 3.50 ( cash ) ...'
    assert iam_spacing("well-known A - B & co") == "well-known A - B & co"
    assert iam_spacing("I'd say 'no'; John's.") == "I'd say ' no ' ; John 's ."


def test_iam_spacing_is_idempotent_and_stays_in_the_charset(wordfreq_lines: list[str]) -> None:
    spaced = [iam_spacing(t) for t in wordfreq_lines]
    assert [iam_spacing(t) for t in spaced] == spaced
    for before, after in zip(wordfreq_lines, spaced, strict=True):
        assert DEFAULT_CHARSET.unknown(after) == [] and after == DEFAULT_CHARSET.normalise(after)
        assert after.replace(" ", "") == before.replace(" ", "")  # only spaces are added
    assert sum(a != b for a, b in zip(wordfreq_lines, spaced, strict=True)) > len(spaced) // 3


def test_detached_gaps_mark_the_spaces_a_writer_leaves_out() -> None:
    assert detached_gaps('he said , " that \'s it . "'.split()) == \
        [False, True, False, True, True, False, True, True]
    assert detached_gaps('( " yes " ) she said'.split()) == [True, True, True, True, False, False]
    assert detached_gaps(["quote", '"']) == [True]  # a lone quote at the end closes
    assert detached_gaps(["one"]) == []


def test_iam_spacing_source_spaces_a_fraction_of_the_lines() -> None:
    base = WordFreqSource()
    assert open_text_source(None) is not None and not isinstance(open_text_source(None), IamSpacing)
    half = open_text_source(None, iam_spacing_p=0.5)
    assert isinstance(half, IamSpacing) and half.describe() == "wordfreq:en+iam_spacing:0.5"
    lines = [half.sample(np.random.default_rng([2, i])) for i in range(400)]
    assert lines == [half.sample(np.random.default_rng([2, i])) for i in range(400)]
    spaced = sum(" , " in t or t.endswith(" .") for t in lines)
    plain = sum(("," in t and " , " not in t) for t in lines)
    assert spaced > 60 and plain > 30
    always = IamSpacing(base, 1.0)
    assert all(iam_spacing(t) == t for t in (always.sample(np.random.default_rng(i)) for i in range(50)))
    with pytest.raises(ValueError, match="iam_spacing_p.*probability"):
        IamSpacing(base, 1.5)
