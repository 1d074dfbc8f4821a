"""CER / WER: corpus-level sums of edit distances over reference lengths."""

from __future__ import annotations

import pytest

from textrec.metrics import EditCounts, cer, edit_counts, line_cer, wer


def test_perfect_predictions_score_zero():
    refs = ["A MOVE to stop Mr. Gaitskell", "from nominating any more"]
    assert cer(refs, refs) == 0.0 and wer(refs, refs) == 0.0


def test_rates_are_summed_over_the_corpus_not_averaged_per_line():
    # one error in a 1-char line and none in a 9-char line: 1/10, not mean(1/1, 0/9) = 0.5
    assert cer(["b", "abcdefghi"], ["a", "abcdefghi"]) == pytest.approx(0.1)
    assert wer(["the cat sat", "on"], ["the cat sat", "in"]) == pytest.approx(0.25)


def test_insertions_deletions_and_substitutions_each_count_once():
    assert edit_counts(["abXd"], ["abcd"]).char_errors == 1
    assert edit_counts(["abcde"], ["abcd"]).char_errors == 1
    assert edit_counts(["abd"], ["abcd"]).char_errors == 1
    assert edit_counts(["the big cat"], ["the cat"]) == EditCounts(4, 7, 1, 2)


def test_cer_can_exceed_one_and_empty_references_are_handled():
    assert cer(["xxxxxx"], ["ab"]) == pytest.approx(3.0)
    assert cer(["", ""], ["", ""]) == 0.0
    assert cer(["ab"], [""]) == 2.0  # no reference characters: the error count itself
    assert line_cer("", "abcd") == 1.0


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        cer(["a", "b"], ["a"])
    with pytest.raises(TypeError, match="not single strings"):
        wer("abc", "abd")
