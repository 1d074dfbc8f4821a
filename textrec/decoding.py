"""Turn per-frame class scores into text: CTC greedy and prefix beam search, a character n-gram LM
and a word LM (a lexicon with unigram log-probabilities) fused into the search.

:class:`DecoderSpec` is the one description of a decoder: training chooses one on val, the model
artifact stores its :meth:`~DecoderSpec.to_dict`, and every model's ``recognise`` takes it.

Conventions: ``log_probs`` is (T, B, C) log-softmax output with the CTC blank at index 0 and character
``i`` at index ``i`` of :class:`textrec.charset.Charset` (1-based); ``lengths`` (B,) are the valid frames.

Confidence (the same definition for every decoder): a character's confidence is the highest
probability the model gave that character on any frame aligned to it (for greedy, its run of frames; for
beam search, its frames in the best Viterbi alignment of the chosen text). A line's confidence is the
**mean** of its character confidences, so it reads as "how sure, per character" and does not shrink
with line length as a product would. A line decoded as empty gets the mean probability of its most
likely class per frame (how sure the model is that nothing is written); a line with no frames gets 0.

A hand-made example where the best path and the best labelling differ (charset ``"a"``: classes blank,
``a``). Greedy takes blank twice (0.36), but "a" has three paths (a-a, a-blank, blank-a: 0.64 in all):

>>> import torch
>>> from textrec.charset import Charset
>>> cs = Charset("a")
>>> lp = torch.tensor([[[0.6, 0.4]], [[0.6, 0.4]]]).log()  # (T=2, B=1, C=2)
>>> ctc_greedy(lp, torch.tensor([2]), cs)[0].text
''
>>> ctc_beam_search(lp, torch.tensor([2]), cs, beam=4)[0].text
'a'
"""

from __future__ import annotations

import bisect
import copy
import math
import numbers
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from textrec.charset import DEFAULT_CHARSET, Charset

NEG_INF = -math.inf
DECODER_KINDS = ("greedy", "beam")
DEFAULT_BEAM = 10  # the one default beam width: DecoderSpec, ctc_beam_search and training's DecodeConfig
DEFAULT_LEXICON_SIZE = 50_000  # wordfreq's most frequent words kept in a word LM
LEXICONS = ("wordfreq", "wordfreq+texts", "texts")  # where a word LM's words come from (WordLM.build)


@dataclass(frozen=True)
class DecoderSpec:
    """How to turn a model's scores into text; stored in the model artifact so serving repeats it.

    ``kind`` is "greedy" or "beam" (beam search of width ``beam``). ``lm_weight``,
    ``insertion_bonus`` and ``word_weight`` are the shallow-fusion terms of CTC beam search (see
    :func:`ctc_beam_search`); the LM weights act only when a language model is passed along (the word
    weight when that LM carries a :class:`WordLM` in ``words``), and only for models whose ``uses_lm``
    is true. ``word_weight`` 0 leaves words out. A greedy decoder keeps ``beam`` (artifacts have always
    written it) but takes no fusion terms.

    >>> DecoderSpec().label(), DecoderSpec("beam", lm_weight=0.3).label(), DecoderSpec("beam", 16).label()
    ('greedy', 'beam10+lm0.3', 'beam16')
    >>> DecoderSpec("beam", lm_weight=0.3, word_weight=0.5).label()
    'beam10+lm0.3+word0.5'
    >>> DecoderSpec.from_dict({"kind": "beam", "beam": 8, "lm_weight": 0.5}) == DecoderSpec("beam", 8, 0.5)
    True
    >>> DecoderSpec("beam", beam=0)
    Traceback (most recent call last):
    ...
    ValueError: decoder beam width must be an integer >= 1, got 0
    """

    kind: str = "greedy"
    beam: int = DEFAULT_BEAM
    lm_weight: float = 0.0
    insertion_bonus: float = 0.0
    word_weight: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or self.kind not in DECODER_KINDS:
            raise ValueError(f"unknown decoder kind {self.kind!r}; expected one of "
                             f"{', '.join(DECODER_KINDS)}")
        if isinstance(self.beam, bool) or not isinstance(self.beam, numbers.Integral) or self.beam < 1:
            raise ValueError(f"decoder beam width must be an integer >= 1, got {self.beam!r}")
        object.__setattr__(self, "beam", int(self.beam))
        for name in ("lm_weight", "insertion_bonus", "word_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
                raise ValueError(f"decoder {name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))  # artifacts and YAML may give ints
        for name in ("lm_weight", "word_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"decoder {name} must be >= 0, got {getattr(self, name)!r}")
        if self.kind == "greedy" and (self.lm_weight or self.insertion_bonus or self.word_weight):
            raise ValueError(f"a greedy decoder takes no lm_weight, insertion_bonus or word_weight, got "
                             f"lm_weight={self.lm_weight!r}, insertion_bonus={self.insertion_bonus!r}, "
                             f"word_weight={self.word_weight!r}; use kind 'beam'")

    def label(self) -> str:
        """A short name for logs and metrics: "greedy", "beam10", "beam10+lm0.3"."""
        if self.kind == "greedy":
            return "greedy"
        out = f"beam{self.beam}"
        if self.lm_weight:
            out += f"+lm{self.lm_weight:g}"
        if self.insertion_bonus:
            out += f"+ins{self.insertion_bonus:g}"
        if self.word_weight:
            out += f"+word{self.word_weight:g}"
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain types for the model artifact (``torch.load(weights_only=True)`` reads them)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DecoderSpec:
        """From :meth:`to_dict` or any artifact written so far (``{"kind", "beam", "lm_weight"}``, later
        ``insertion_bonus`` and ``word_weight``, or fewer keys): missing keys take their defaults
        (so older artifacts decode without words), unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise ValueError(f"decoder settings must be a mapping, got {type(data).__name__}: {data!r}")
        known = [f.name for f in fields(cls)]
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            raise ValueError(f"decoder settings have unknown keys {unknown}; expected some of {known}")
        return cls(**data)


@dataclass
class Recognition:
    """One decoded line: class indices (1-based, no blanks), text, and confidences in [0, 1]."""

    indices: list[int]
    text: str
    confidence: float
    char_confidences: list[float] | None = None


def _check(log_probs: torch.Tensor, lengths: torch.Tensor, charset: Charset) -> tuple[np.ndarray, np.ndarray]:
    if log_probs.dim() != 3:
        raise ValueError(f"log_probs must be (T, B, C), got shape {tuple(log_probs.shape)}")
    t, b, c = log_probs.shape
    if c != charset.num_classes:
        raise ValueError(f"log_probs have {c} classes but the charset needs {charset.num_classes} (chars + blank)")
    lens = torch.as_tensor(lengths).reshape(-1).cpu().numpy().astype(np.int64)
    if lens.shape != (b,) or (lens < 0).any() or (lens > t).any():
        raise ValueError(f"lengths must be {b} values in [0, {t}], got {lens.tolist()}")
    return log_probs.detach().float().cpu().numpy(), lens


# ---------------------------------------------------------------------------------------------------
# Greedy


def ctc_greedy(log_probs: torch.Tensor, lengths: torch.Tensor, charset: Charset) -> list[Recognition]:
    """Best class per frame, repeats collapsed, blanks dropped.

    >>> cs = Charset("ab")
    >>> p = torch.tensor([[.1, .8, .1], [.6, .3, .1], [.1, .8, .1], [.1, .8, .1], [.2, .1, .7]])
    >>> r = ctc_greedy(p.log()[:, None], torch.tensor([5]), cs)[0]  # frames: a _ a a b
    >>> r.text, r.indices, [round(c, 2) for c in r.char_confidences], round(r.confidence, 3)
    ('aab', [1, 1, 2], [0.8, 0.8, 0.7], 0.767)
    """
    lp, lens = _check(log_probs, lengths, charset)
    best = lp.argmax(axis=2)  # (T, B)
    best_p = np.exp(np.take_along_axis(lp, best[:, :, None], axis=2)[:, :, 0])  # (T, B)
    return [_greedy_one(best[: lens[i], i], best_p[: lens[i], i], charset) for i in range(lp.shape[1])]


def _greedy_one(seq: np.ndarray, prob: np.ndarray, charset: Charset) -> Recognition:
    if seq.size == 0:
        return Recognition([], "", 0.0, [])
    starts = np.flatnonzero(np.r_[True, seq[1:] != seq[:-1]])  # first frame of each run
    run_max = np.maximum.reduceat(prob, starts)
    keep = seq[starts] != charset.blank
    indices = seq[starts][keep].tolist()
    confs = run_max[keep].tolist()
    conf = float(np.mean(confs)) if confs else float(prob.mean())
    return Recognition(indices, charset.decode(indices), conf, confs)


# ---------------------------------------------------------------------------------------------------
# Character n-gram language model


class CharNgramLM:
    """Interpolated Witten-Bell character n-gram model over a charset plus an end-of-line symbol.

    ``P(c | h) = (N(h c) + U(h) P(c | h')) / (N(h) + U(h))`` where ``h'`` drops the oldest character
    of ``h`` and ``U(h)`` is the number of distinct characters seen after ``h``; the recursion ends in
    a uniform distribution, so every character keeps some probability. Lines start with ``order - 1``
    start symbols, so the model learns how lines begin.

    >>> lm = CharNgramLM.fit(["the cat", "the hat"], order=3, charset=Charset("aceht "))
    >>> lm.log_prob("the c", "a") > lm.log_prob("the c", "t")
    True
    >>> round(sum(math.exp(lm.log_prob("th", c)) for c in "aceht ") + math.exp(lm.log_prob_end("th")), 6)
    1.0
    """

    BOS = "\x02"
    EOS = "\x03"

    def __init__(self, counts: dict[str, int], order: int, charset: Charset = DEFAULT_CHARSET) -> None:
        if order < 1:
            raise ValueError(f"n-gram order must be >= 1, got {order}")
        self.order = order
        self.charset = charset
        self.counts = counts  # n-gram (context + character, any length 1..order) -> count
        self._vocab = charset.num_classes  # characters + end of line (the blank slot is not a character)
        self._next: dict[str, dict[str, int]] = defaultdict(dict)
        self._total: dict[str, int] = defaultdict(int)
        for gram, n in counts.items():
            self._next[gram[:-1]][gram[-1]] = n
            self._total[gram[:-1]] += n
        self._cache: dict[tuple[str, str], float] = {}
        self._log_cache: dict[tuple[str, str], float] = {}
        # The word LM fused beside this one (see with_words): one object then carries a decoder's
        # language knowledge from training through the model artifact to the Recognizer.
        self.words: WordLM | None = None

    @classmethod
    def uniform(cls, charset: Charset = DEFAULT_CHARSET) -> CharNgramLM:
        """A model that knows nothing (all characters equally likely): what carries a word LM that is
        used without character fusion (``lm_weight`` 0), at no cost in the artifact."""
        return cls({}, 1, charset)

    def with_words(self, words: WordLM | None) -> CharNgramLM:
        """This model with ``words`` beside it (None: without); shares the counts and caches."""
        out = copy.copy(self)
        out.words = words
        return out

    @classmethod
    def fit(cls, texts: Iterable[str], order: int = 6, charset: Charset = DEFAULT_CHARSET) -> CharNgramLM:
        """Count n-grams of every order up to ``order`` in normalised texts; texts with characters
        outside the charset are skipped (a language model must not invent characters)."""
        counts: dict[str, int] = defaultdict(int)
        pad = cls.BOS * (order - 1)
        for text in texts:
            text = charset.normalise(text)
            if not text or charset.unknown(text):
                continue
            s = pad + text + cls.EOS
            for i in range(order - 1, len(s)):
                for n in range(1, order + 1):
                    counts[s[i - n + 1: i + 1]] += 1
        return cls(dict(counts), order, charset)

    def _history(self, context: str) -> str:
        n = self.order - 1
        if n == 0:
            return ""
        if len(context) >= n:
            return context[-n:]
        return self.BOS * (n - len(context)) + context

    def _prob(self, h: str, ch: str) -> float:
        key = (h, ch)
        p = self._cache.get(key)
        if p is None:
            lower = self._prob(h[1:], ch) if h else 1.0 / self._vocab
            total = self._total.get(h, 0)
            if total:
                seen = self._next[h]
                p = (seen.get(ch, 0) + len(seen) * lower) / (total + len(seen))
            else:
                p = lower
            self._cache[key] = p
        return p

    def log_prob(self, context: str, ch: str) -> float:
        """log P(ch | the last order-1 characters of ``context``); ``context`` is the text so far."""
        key = (self._history(context), ch)
        lp = self._log_cache.get(key)
        if lp is None:  # beam search asks the same few questions many times
            if ch not in self.charset:
                raise ValueError(f"character {ch!r} is not in the language model's charset")
            lp = self._log_cache[key] = math.log(self._prob(*key))
        return lp

    def log_prob_end(self, context: str) -> float:
        """log P(end of line | context): rewards texts that end where lines in the corpus end."""
        return math.log(self._prob(self._history(context), self.EOS))

    def to_dict(self) -> dict:
        """Plain types only (the model artifact loads with ``torch.load(weights_only=True)``)."""
        return {"kind": "witten-bell", "order": self.order, "chars": self.charset.chars,
                "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, data: dict) -> CharNgramLM:
        if data.get("kind") != "witten-bell":
            raise ValueError(f"language model: expected kind 'witten-bell', got {data.get('kind')!r}")
        return cls({str(k): int(v) for k, v in data["counts"].items()}, int(data["order"]),
                   Charset(data["chars"]))


# ---------------------------------------------------------------------------------------------------
# Word language model (a lexicon with unigram log-probabilities)


_LETTERS = r"[^\W\d_]"
_WORD_RUN = re.compile(rf"{_LETTERS}+(?:'{_LETTERS}*)*")  # "don't", "dogs'", an unfinished "don'"
_LEXICON_WORD = re.compile(rf"{_LETTERS}+(?:'{_LETTERS}+)*")
_DIGIT = re.compile(r"\d")
_EDGE_PUNCTUATION = re.compile(r"^[\W_]+|[\W_]+$")
_NUMBER = re.compile(r"\d[\d.,:/-]*(?:st|nd|rd|th|s)?", re.IGNORECASE)  # 1987, 2.45, 3/4, 21st, 1990s
_NUMBER_PREFIX = re.compile(r"\d[\d.,:/-]*(?:st?|nd?|rd?|th?)?", re.IGNORECASE)  # and what may become one
_CACHE_LIMIT = 200_000  # cached segment scores before the caches start afresh (servers run for weeks)


def words_of(text: str) -> list[str]:
    """The words a :class:`WordLM` scores in ``text``, lower-cased: runs of letters (inner apostrophes
    kept) in the space-separated tokens that hold no digit.

    >>> words_of("The crowd's 3rd cheer -- well-known (1987), 'he said'.")
    ['the', "crowd's", 'cheer', 'well', 'known', 'he', 'said']
    """
    out = []
    for token in text.split():
        if not _DIGIT.search(token):
            out += [m.group().rstrip("'").lower() for m in _WORD_RUN.finditer(token)]
    return out


class WordLM:
    """Unigram word model over a lexicon, for word-level fusion in CTC beam search.

    A word is a run of letters with inner apostrophes ("don't"); lookups are lower-cased, so "The" and
    "the" are one word. A lexicon word has its log-probability, any other word ``oov_log_prob`` (below
    every lexicon word). Beam search adds :meth:`word_score`, the log-probability relative to a typical
    word (the mean log-probability of a word of running text: minus the lexicon's entropy). A typical
    word scores 0, so a line's score does not sink with its number of words and the search is not
    pushed to run words together into fewer, unknown ones. Numbers ("1987", "2.45", "3rd") and
    punctuation are no words and score 0, as a typical word: they are never penalised. A token that
    mixes letters and digits otherwise ("pa3sage") scores as one unknown word, so a digit is no way
    out of the lexicon.

    :meth:`segment_score` scores the text since the last space. An unfinished word there scores the
    best lexicon word it could still become (look-ahead over the sorted words, found with bisect), so
    a beam that has left the lexicon pays at the letter that left it, before a misspelt prefix can
    crowd better ones out of the beam; once the word ends its score is exactly its own.

    >>> lm = WordLM({"crowd": -8.0, "crown": -9.0, "the": -3.0}, oov_log_prob=-15.0)
    >>> lm.log_prob("The"), lm.log_prob("croud"), lm.prefix_log_prob("cro"), lm.prefix_log_prob("crou")
    (-3.0, -15.0, -8.0, -15.0)
    >>> round(lm.typical_log_prob, 3), round(lm.word_score("crowd"), 3)
    (-3.048, -4.952)
    >>> lm.segment_score("crowd,", complete=True) == lm.word_score("crowd")
    True
    >>> lm.segment_score("(1987),", complete=True), lm.segment_score("3rd", complete=True)
    (0.0, 0.0)
    """

    def __init__(self, log_probs: Mapping[str, float], oov_log_prob: float) -> None:
        merged: dict[str, float] = {}
        for word, lp in log_probs.items():
            key = str(word).lower()
            if not _LEXICON_WORD.fullmatch(key):
                raise ValueError(f"word LM: {word!r} is not a word (letters with inner apostrophes)")
            if isinstance(lp, bool) or not isinstance(lp, numbers.Real) or not lp <= 0:
                raise ValueError(f"word LM: log-probability of {word!r} must be a number <= 0, got {lp!r}")
            merged[key] = _lse(merged.get(key, NEG_INF), float(lp))  # "The" and "the" pool their mass
        if not merged:
            raise ValueError("word LM: the lexicon is empty")
        self.words = sorted(merged)
        # float32 values, as the artifact stores them: a loaded model scores exactly as it was chosen
        self.log_probs = np.array([merged[w] for w in self.words], np.float32).astype(np.float64)
        self._index: dict[str, float] = dict(zip(self.words, self.log_probs.tolist(), strict=True))
        if isinstance(oov_log_prob, bool) or not isinstance(oov_log_prob, numbers.Real) \
                or not math.isfinite(oov_log_prob) or oov_log_prob > self.log_probs.min():
            raise ValueError(f"word LM: oov_log_prob must be a finite number no higher than the rarest "
                             f"word's log-probability {self.log_probs.min():.3f}, got {oov_log_prob!r}")
        self.oov_log_prob: float = float(np.float32(oov_log_prob))
        p = np.exp(self.log_probs - self.log_probs.max())
        self.typical_log_prob: float = float((p * self.log_probs).sum() / p.sum())  # E[log P], running text
        self._prefixes: dict[str, float] = {}
        self._segments: dict[tuple[str, bool], float] = {}
        self._steps: dict[str, float] = {}

    # --- building ------------------------------------------------------------------------------------

    @classmethod
    def from_counts(cls, counts: Mapping[str, float], oov_log_prob: float | None = None) -> WordLM:
        """Relative frequencies of ``counts``; OOV defaults to a tenth of the rarest word's probability."""
        total = float(sum(counts.values()))
        if not counts or total <= 0:
            raise ValueError("word LM: no word counts to build from")
        lps = {w: math.log(c / total) for w, c in counts.items() if c > 0}
        if oov_log_prob is None:
            oov_log_prob = min(lps.values()) - math.log(10.0)
        return cls(lps, oov_log_prob)

    @classmethod
    def from_texts(cls, texts: Iterable[str], charset: Charset = DEFAULT_CHARSET) -> WordLM:
        """Word counts of ``texts`` (normalised to ``charset``; texts outside it are skipped)."""
        return cls.from_counts(_text_counts(texts, charset))

    @classmethod
    def from_wordfreq(cls, size: int = DEFAULT_LEXICON_SIZE, *, lang: str = "en", texts: Iterable[str] = (),
                      text_weight: float = 0.2, charset: Charset = DEFAULT_CHARSET) -> WordLM:
        """wordfreq's ``size`` most frequent words (those inside ``charset``), with their frequencies.

        With ``texts`` their words join the lexicon: ``P = (1 - text_weight) P_wordfreq + text_weight
        P_texts``, so names and jargon of the training texts are known words too."""
        import wordfreq

        if size < 1 or not 0.0 <= text_weight <= 1.0:
            raise ValueError(f"word LM: size must be >= 1 and text_weight in [0, 1], got {size}, "
                             f"{text_weight}")
        freqs = wordfreq.get_frequency_dict(lang)
        kept = {w: freqs[w] for w in wordfreq.top_n_list(lang, size)
                if _LEXICON_WORD.fullmatch(w) and not charset.unknown(w) and freqs.get(w, 0) > 0}
        if not kept:
            raise ValueError(f"word LM: wordfreq has no usable {lang!r} words")
        total = sum(kept.values())
        probs = {w: f / total for w, f in kept.items()}
        own = _text_counts(texts, charset)
        if own and text_weight > 0:
            n = sum(own.values())
            probs = {w: (1 - text_weight) * probs.get(w, 0.0) + text_weight * own.get(w, 0) / n
                     for w in probs.keys() | own.keys()}
        return cls.from_counts(probs)

    @classmethod
    def build(cls, lexicon: str = "wordfreq", texts: Iterable[str] = (), *, size: int = DEFAULT_LEXICON_SIZE,
              charset: Charset = DEFAULT_CHARSET) -> WordLM:
        """The word LM named by ``lexicon`` (one of :data:`LEXICONS`): wordfreq's words, wordfreq's
        extended with the words of ``texts``, or the words of ``texts`` alone."""
        if lexicon == "wordfreq":
            return cls.from_wordfreq(size, charset=charset)
        if lexicon == "wordfreq+texts":
            return cls.from_wordfreq(size, texts=texts, charset=charset)
        if lexicon == "texts":
            return cls.from_texts(texts, charset)
        raise ValueError(f"unknown lexicon {lexicon!r}; expected one of {', '.join(LEXICONS)}")

    # --- scoring -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and word.lower() in self._index

    def log_prob(self, word: str) -> float:
        """log P(word), lower-cased and without trailing apostrophes; ``oov_log_prob`` if unknown."""
        return self._index.get(word.rstrip("'").lower(), self.oov_log_prob)

    def prefix_log_prob(self, prefix: str) -> float:
        """The best log P of a lexicon word that starts with ``prefix``; ``oov_log_prob`` if none does."""
        key = prefix.lower()
        lp = self._prefixes.get(key)
        if lp is None:
            lo = bisect.bisect_left(self.words, key)
            hi = bisect.bisect_left(self.words, key + "\U0010ffff", lo)
            lp = float(self.log_probs[lo:hi].max()) if hi > lo else self.oov_log_prob
            if len(self._prefixes) > _CACHE_LIMIT:
                self._prefixes.clear()
            self._prefixes[key] = lp
        return lp

    def word_score(self, word: str) -> float:
        """What a finished ``word`` adds to a line (times ``word_weight``): log P against a typical word's."""
        return self.log_prob(word) - self.typical_log_prob

    def segment_score(self, segment: str, complete: bool) -> float:
        """The score of ``segment`` (text without spaces): the sum of :meth:`word_score` over its words,
        the last one taken as unfinished (look-ahead) unless ``complete`` or punctuation follows it."""
        key = (segment, complete)
        score = self._segments.get(key)
        if score is None:
            score = self._segment_score(segment, complete)
            if len(self._segments) > _CACHE_LIMIT:
                self._segments.clear()
            self._segments[key] = score
        return score

    def _segment_score(self, segment: str, complete: bool) -> float:
        if segment.isalpha():  # the common case, one word: no regular expressions
            lp = self.log_prob(segment) if complete else self.prefix_log_prob(segment)
            return lp - self.typical_log_prob
        runs = list(_WORD_RUN.finditer(segment))
        if not runs:
            return 0.0  # punctuation, numbers
        if _DIGIT.search(segment):
            core = _EDGE_PUNCTUATION.sub("", segment)
            number = _NUMBER if complete else _NUMBER_PREFIX
            return 0.0 if number.fullmatch(core) else self.oov_log_prob - self.typical_log_prob
        score = 0.0
        for m in runs:
            if complete or m.end() < len(segment):
                score += self.log_prob(m.group())
            else:
                score += self.prefix_log_prob(m.group())
        return score - len(runs) * self.typical_log_prob

    def step_score(self, segment: str, ch: str) -> float:
        """What appending ``ch`` to ``segment`` (the text since the last space) adds to the score; a
        space finishes the segment, so its last word's look-ahead becomes the word's own score. Beam
        search asks this once per new prefix, so it is one cached look-up."""
        key = segment + ch  # a segment holds no space, so "seg " can only mean "seg, finished"
        delta = self._steps.get(key)
        if delta is None:
            after = self.segment_score(segment, True) if ch == " " else self.segment_score(key, False)
            delta = after - self.segment_score(segment, False)
            if len(self._steps) > _CACHE_LIMIT:
                self._steps.clear()
            self._steps[key] = delta
        return delta

    def text_score(self, text: str) -> float:
        """The word score of a whole line: what beam search adds to it, times ``word_weight``."""
        return sum(self.segment_score(seg, True) for seg in text.split(" "))

    def clear_cache(self) -> None:
        self._prefixes.clear()
        self._segments.clear()
        self._steps.clear()

    # --- the artifact --------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Compact and plain (``torch.load(weights_only=True)`` reads it): the words as one string,
        their log-probabilities as one float32 tensor."""
        return {"kind": "unigram", "words": "\n".join(self.words),
                "log_probs": torch.from_numpy(self.log_probs.astype(np.float32)),
                "oov_log_prob": self.oov_log_prob}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WordLM:
        if not isinstance(data, Mapping) or data.get("kind") != "unigram":
            got = data.get("kind") if isinstance(data, Mapping) else type(data).__name__
            raise ValueError(f"word LM: expected kind 'unigram', got {got!r}")
        words = str(data["words"]).split("\n")
        lps = torch.as_tensor(data["log_probs"]).double().tolist()
        if len(words) != len(lps):
            raise ValueError(f"word LM: {len(words)} words but {len(lps)} log-probabilities")
        return cls(dict(zip(words, lps, strict=True)), float(data["oov_log_prob"]))


def _text_counts(texts: Iterable[str], charset: Charset) -> Counter[str]:
    counts: Counter[str] = Counter()
    for text in texts:
        text = charset.normalise(text)
        if text and not charset.unknown(text):
            counts.update(w for w in words_of(text) if _LEXICON_WORD.fullmatch(w))
    return counts


# ---------------------------------------------------------------------------------------------------
# Prefix beam search


def _lse(a: float, b: float) -> float:
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))


def ctc_beam_search(log_probs: torch.Tensor, lengths: torch.Tensor, charset: Charset, *,
                    beam: int = DEFAULT_BEAM, lm: CharNgramLM | None = None, lm_weight: float = 0.5,
                    insertion_bonus: float = 0.0, words: WordLM | None = None, word_weight: float = 0.5,
                    prune: float = 1e-3) -> list[Recognition]:
    """CTC prefix beam search, optionally with a character LM and a word LM (shallow fusion).

    Each prefix keeps two log probabilities, ending in a blank and ending in its last character, so a
    repeated character is only emitted across a blank. A prefix is ranked by its CTC log probability
    plus ``lm_weight * log P_lm(prefix) + insertion_bonus * len(prefix) + word_weight * W(prefix)``:
    the character LM term is added when a character is appended, and its end-of-line probability at
    the end; ``W`` is the :class:`WordLM` score of the prefix's words, each finished word (a space or
    the end of the line follows it) at its :meth:`~WordLM.word_score` and the unfinished last one at
    its best lexicon completion, so it changes as characters are appended and is exact at the end. Per frame
    only characters with probability >= ``prune`` (at most ``beam`` of them) are tried as extensions:
    this keeps a 100-frame line with 80 classes to a few milliseconds in Python. With ``prune=0`` and
    a beam wider than the number of distinct prefixes the search is exact.
    """
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    if lm is not None and lm.charset.chars != charset.chars:
        raise ValueError("the language model was built for a different charset than the decoder's")
    lp, lens = _check(log_probs, lengths, charset)
    fusion = _Fusion(lm if lm is not None and lm_weight else None, lm_weight, insertion_bonus,
                     words if words is not None and word_weight else None, word_weight)
    log_prune = math.log(prune) if prune > 0 else NEG_INF
    out = []
    for i in range(lp.shape[1]):
        frames = lp[: lens[i], i]
        text = _beam_one(frames, charset, beam, fusion, log_prune)
        out.append(_aligned(frames, text, charset))
    return out


def ctc_decode(log_probs: torch.Tensor, lengths: torch.Tensor, charset: Charset, decoder: DecoderSpec,
               lm: CharNgramLM | None = None) -> list[Recognition]:
    """Decode CTC scores as ``decoder`` says: greedy, or prefix beam search with ``lm`` fused in (and
    the word LM it carries in ``lm.words``, at ``decoder.word_weight``)."""
    if decoder.kind == "greedy":
        return ctc_greedy(log_probs, lengths, charset)
    return ctc_beam_search(log_probs, lengths, charset, beam=decoder.beam, lm=lm, lm_weight=decoder.lm_weight,
                           insertion_bonus=decoder.insertion_bonus,
                           words=lm.words if lm is not None else None, word_weight=decoder.word_weight)


class _Fusion:
    """The score a prefix earns beyond its CTC probability: character LM, insertion bonus, words."""

    def __init__(self, lm: CharNgramLM | None, lm_weight: float, bonus: float, words: WordLM | None,
                 word_weight: float) -> None:
        self.lm, self.lm_weight, self.bonus = lm, lm_weight, bonus
        self.words, self.word_weight = words, word_weight

    def step(self, prefix: str, ch: str) -> float:
        """What appending ``ch`` to ``prefix`` adds besides the insertion bonus."""
        out = 0.0
        if self.lm is not None:
            out += self.lm_weight * self.lm.log_prob(prefix, ch)
        if self.words is not None:
            out += self.word_weight * self.words.step_score(prefix[prefix.rfind(" ") + 1:], ch)
        return out

    def end(self, prefix: str) -> float:
        """What ending the line after ``prefix`` adds."""
        out = 0.0
        if self.lm is not None:
            out += self.lm_weight * self.lm.log_prob_end(prefix)
        if self.words is not None:
            segment = prefix[prefix.rfind(" ") + 1:]
            out += self.word_weight * (self.words.segment_score(segment, True)
                                       - self.words.segment_score(segment, False))
        return out


def _candidates(lp: np.ndarray, k: int, log_prune: float) -> list[list[int]]:
    """Per frame, the (at most k) character classes with log probability >= ``log_prune``."""
    chars = lp[:, 1:]
    k = min(k, chars.shape[1])
    top = np.argpartition(-chars, k - 1, axis=1)[:, :k] if k < chars.shape[1] else \
        np.broadcast_to(np.arange(chars.shape[1]), chars.shape)
    keep = np.take_along_axis(chars, top, axis=1) >= log_prune
    return [(row[ok] + 1).tolist() for row, ok in zip(top, keep, strict=True)]


def _beam_one(lp: np.ndarray, charset: Charset, beam: int, fusion: _Fusion, log_prune: float) -> str:
    chars = charset.chars
    index = {c: i + 1 for i, c in enumerate(chars)}
    beams: dict[str, list[float]] = {"": [0.0, NEG_INF]}  # prefix -> [log p ending in blank, in its char]
    extra: dict[str, float] = {"": 0.0}  # prefix -> fusion score (LMs, insertion bonus), fixed per prefix
    cands = _candidates(lp, beam, log_prune)
    for row, cand in zip(lp.tolist(), cands, strict=True):
        blank = row[0]
        if not cand:  # nothing new can start here: update every prefix in place, the set stays
            for prefix, e in beams.items():
                total = _lse(e[0], e[1])
                e[1] = e[1] + row[index[prefix[-1]]] if prefix else NEG_INF
                e[0] = total + blank
            continue
        nxt: dict[str, list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = _lse(pb, pnb)
            entry = nxt.setdefault(prefix, [NEG_INF, NEG_INF])
            entry[0] = _lse(entry[0], total + blank)
            last = prefix[-1] if prefix else ""
            if prefix:  # the last character continues its run
                entry[1] = _lse(entry[1], pnb + row[index[last]])
            base = extra[prefix]
            for c in cand:
                ch = chars[c - 1]
                new = prefix + ch
                p = (pb if ch == last else total) + row[c]
                seen = nxt.get(new)
                if seen is None:
                    nxt[new] = [NEG_INF, p]
                else:
                    seen[1] = _lse(seen[1], p)
                if new not in extra:
                    extra[new] = base + fusion.bonus + fusion.step(prefix, ch)
        if len(nxt) > beam:
            scored = sorted(((_lse(e[0], e[1]) + extra[p], p) for p, e in nxt.items()), reverse=True)
            nxt = {p: nxt[p] for _, p in scored[:beam]}
        beams = nxt

    def final(item: tuple[str, list[float]]) -> float:
        return _lse(*item[1]) + extra[item[0]] + fusion.end(item[0])

    return max(beams.items(), key=final)[0]


def _aligned(lp: np.ndarray, text: str, charset: Charset) -> Recognition:
    """Recognition for ``text`` with confidences from its best (Viterbi) CTC alignment to ``lp``."""
    if lp.shape[0] == 0:
        return Recognition([], "", 0.0, [])
    if not text:
        return Recognition([], "", float(np.exp(lp.max(axis=1)).mean()), [])
    labels = charset.encode(text, normalise=False)
    states = viterbi_states(lp, labels)
    confs = []
    for k, c in enumerate(labels):
        frames = np.flatnonzero(states == 2 * k + 1)
        confs.append(float(np.exp(lp[frames, c].max())) if frames.size else 0.0)
    return Recognition(labels, text, float(np.mean(confs)), confs)


def viterbi_states(lp: np.ndarray, labels: list[int], blank: int = 0) -> np.ndarray:
    """Best CTC alignment of ``labels`` to frames ``lp`` (T, C): the state per frame, where state
    ``2k+1`` is label ``k`` and even states are blanks. Raises ValueError if no alignment fits.

    >>> lp = np.log(np.array([[.1, .9], [.8, .2], [.1, .9]]))
    >>> viterbi_states(lp, [1, 1]).tolist()
    [1, 2, 3]
    """
    ext = np.full(2 * len(labels) + 1, blank, np.int64)
    ext[1::2] = labels
    s = ext.size
    # a state may skip the blank before it unless it repeats the label two states back
    skip = np.zeros(s, bool)
    skip[3::2] = ext[3::2] != ext[1:-2:2]
    t_len = lp.shape[0]
    emit = lp[:, ext]  # (T, S)
    score = np.full(s, NEG_INF)
    score[:2] = emit[0, :2]
    back = np.zeros((t_len, s), np.int8)  # 0: stay, 1: from s-1, 2: from s-2
    moves = np.full((3, s), NEG_INF)
    for t in range(1, t_len):
        moves[0] = score
        moves[1, 1:] = score[:-1]
        moves[2, 2:] = np.where(skip[2:], score[:-2], NEG_INF)
        back[t] = moves.argmax(axis=0)
        score = moves.max(axis=0) + emit[t]
    end = s - 1 if s == 1 or score[s - 1] >= score[s - 2] else s - 2
    if score[end] == NEG_INF:
        raise ValueError(f"no CTC alignment of {len(labels)} labels to {t_len} frames")
    states = np.empty(t_len, np.int64)
    for t in range(t_len - 1, -1, -1):
        states[t] = end
        end -= int(back[t, end])
    return states
