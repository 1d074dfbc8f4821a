"""The one character set: indices, round trips, normalisation and its errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from textrec.charset import DEFAULT_CHARSET, IAM_CHARS, Charset, UnknownCharacterError


def test_blank_is_zero_and_classes_are_characters_plus_blank():
    cs = Charset()
    assert cs.blank == 0
    assert len(cs) == 79 and cs.num_classes == 80
    assert cs.encode("A") == [IAM_CHARS.index("A") + 1]
    assert 0 not in cs.encode(IAM_CHARS.replace(" ", ""))


def test_every_character_round_trips():
    cs = DEFAULT_CHARSET
    text = IAM_CHARS.strip()  # normalise strips the leading space
    assert cs.decode(cs.encode(text)) == text
    assert cs.encode(IAM_CHARS, normalise=False) == list(range(1, 80))


def test_decode_skips_blanks_and_accepts_numpy_and_tensor_indices():
    import torch

    cs = Charset()
    idx = cs.encode("Hi there")
    with_blanks = [0] + [i for k in idx for i in (k, 0)]
    assert cs.decode(with_blanks) == "Hi there"
    assert cs.decode(np.array(idx, dtype=np.int64)) == "Hi there"
    assert cs.decode(torch.tensor(idx)) == "Hi there"


def test_decode_rejects_indices_outside_the_charset():
    with pytest.raises(ValueError, match="class index 80 is outside the charset"):
        Charset().decode([1, 80])
    with pytest.raises(ValueError, match="-1"):
        Charset().decode([-1])


@pytest.mark.parametrize("raw, expected", [
    ("It\u2019s \u201cfine\u201d", "It's \"fine\""),
    ("well\u2014then \u2013 no", "well-then - no"),
    ("wait\u2026", "wait..."),
    ("A|MOVE|to|stop", "A MOVE to stop"),
    ("  tabs\tand\nnewlines\u00a0too  ", "tabs and newlines too"),
    ("`quoted\u00b4", "'quoted'"),
])
def test_normalise_maps_typography_and_collapses_space(raw, expected):
    cs = Charset()
    assert cs.normalise(raw) == expected
    assert cs.decode(cs.encode(raw)) == expected


def test_unknown_characters_are_named_with_code_points_and_the_text():
    with pytest.raises(UnknownCharacterError) as e:
        Charset().encode("na\u00efve caf\u00e9 na\u00efve")
    message = str(e.value)
    assert "'\u00ef' (U+00EF)" in message and "'\u00e9' (U+00E9)" in message
    assert message.count("U+00EF") == 1  # each character named once
    assert "in text 'na\u00efve caf\u00e9 na\u00efve'" in message
    assert isinstance(e.value, ValueError)


def test_encode_without_normalising_rejects_what_normalise_would_map():
    with pytest.raises(UnknownCharacterError, match=r"'\|'"):
        Charset().encode("a|b", normalise=False)


def test_unknown_lists_distinct_characters_in_order():
    assert Charset().unknown("\u00e9a\u00fc\u00e9[") == ["\u00e9", "\u00fc", "["]
    assert Charset().unknown("plain text.") == []


def test_custom_charsets_and_repeated_characters():
    cs = Charset("abc")
    assert cs.num_classes == 4 and cs.encode("cab") == [3, 1, 2]
    assert "a" in cs and "d" not in cs
    with pytest.raises(ValueError, match="repeated characters"):
        Charset("abca")


def test_charsets_compare_hash_and_pickle_by_their_characters():
    cs = Charset()
    clone = pickle.loads(pickle.dumps(cs))
    assert clone == cs and hash(clone) == hash(cs)
    assert clone.encode("Hello") == cs.encode("Hello")
    assert Charset("ab") != Charset("ba")
    with pytest.raises(AttributeError):
        cs.chars = "xyz"  # frozen: a model's charset cannot drift
