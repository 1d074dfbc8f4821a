"""Character and word error rates, as in the IAM literature: total edits over total reference length.

Rates are summed over the corpus, not averaged per line, so a long line weighs more than a short one;
that is how published CER/WER figures are computed. Words are whitespace-separated tokens.

>>> cer(["helo world"], ["hello world"])
0.09090909090909091
>>> wer(["helo world", "good"], ["hello world", "good"])
0.3333333333333333
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import editdistance


class EditCounts(NamedTuple):
    """Summed edit distances and reference lengths, in characters and in words."""

    char_errors: int
    chars: int
    word_errors: int
    words: int

    @property
    def cer(self) -> float:
        return _rate(self.char_errors, self.chars)

    @property
    def wer(self) -> float:
        return _rate(self.word_errors, self.words)


def _rate(errors: int, total: int) -> float:
    # No reference characters at all: any output is an error, so report the error count itself.
    return errors / total if total else float(errors)


def _pairs(predictions: Sequence[str], references: Sequence[str]) -> list[tuple[str, str]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise TypeError("predictions and references must be sequences of strings, not single strings")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    return list(zip(predictions, references, strict=True))


def edit_counts(predictions: Sequence[str], references: Sequence[str]) -> EditCounts:
    """Character and word edit distances summed over lines, with the reference lengths.

    >>> edit_counts(["a cat", "dog"], ["a bat", "dogs"])
    EditCounts(char_errors=2, chars=9, word_errors=2, words=3)
    """
    ce = cn = we = wn = 0
    for pred, ref in _pairs(predictions, references):
        ce += editdistance.eval(pred, ref)
        cn += len(ref)
        ref_words = ref.split()
        we += editdistance.eval(pred.split(), ref_words)
        wn += len(ref_words)
    return EditCounts(ce, cn, we, wn)


def cer(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Character error rate: sum of character edit distances / sum of reference lengths."""
    return edit_counts(predictions, references).cer


def wer(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Word error rate: sum of word-level edit distances / number of reference words."""
    return edit_counts(predictions, references).wer


def line_cer(prediction: str, reference: str) -> float:
    """One line's character error rate.

    >>> line_cer("abd", "abcd")
    0.25
    """
    return _rate(editdistance.eval(prediction, reference), len(reference))


def numeric(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite plain numbers among ``values`` (what MLflow and KFP metrics can hold); booleans,
    text, NaN and infinities are left out.

    >>> numeric({"cer": 0.1, "n": 3, "ok": True, "name": "x", "lr": float("nan"), "best": float("inf")})
    {'cer': 0.1, 'n': 3.0}
    """
    return {k: float(v) for k, v in values.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
