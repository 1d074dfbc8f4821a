"""Sentence sources: where the words of a synthetic line come from.

Every source has one method, ``sample(rng) -> str``, that returns one line of text shaped like a line of
the IAM database: about 20-60 characters (mean ~43, ~8 words), cut from running text so it may start or
end mid-sentence, with capitals, punctuation and numbers, already normalised and inside the charset.
The result depends only on the generator's state, so a seeded generator gives the same line anywhere.

- :class:`WordFreqSource` (the default) draws English words by their real frequency (``wordfreq``),
  alternating between function words and content words so the rhythm reads like prose, and decorates the
  sentences with IAM-style punctuation, quotes, numbers and capitals.
- :class:`TextFileSource` cuts lines from any text file.
- :class:`StoreTextSource` reuses the transcriptions of an existing line store (e.g. ingested IAM).

:class:`IamSpacing` wraps any of them to space a fraction of the lines the way IAM's transcriptions are
spaced (``he said , " that 's it . "``), so that a model learns to write IAM's references.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from textrec.charset import DEFAULT_CHARSET, Charset


@runtime_checkable
class TextSource(Protocol):
    """Anything that yields lines of text from a random generator."""

    def sample(self, rng: np.random.Generator) -> str: ...

    def describe(self) -> str: ...


@dataclass(frozen=True)
class LineLength:
    """Target line lengths in characters. Lines are word-wrapped to the target, so the realised mean is
    a few characters shorter than ``mean``: the defaults give IAM's ~43."""

    mean: float = 47.0
    sd: float = 10.0
    low: int = 18
    high: int = 68

    def sample(self, rng: np.random.Generator) -> int:
        return int(np.clip(round(rng.normal(self.mean, self.sd)), self.low, self.high))


def wrap_line(words: Sequence[str], start: int, target: int) -> str:
    """Join ``words`` from ``start`` (wrapping around the end) until the next word would pass ``target``
    characters. At least one word is taken, however long."""
    out: list[str] = []
    length = -1
    n = len(words)
    for k in range(n):
        w = words[(start + k) % n]
        if out and length + 1 + len(w) > target:
            break
        out.append(w)
        length += 1 + len(w)
    return " ".join(out)


def clean_word(word: str, charset: Charset = DEFAULT_CHARSET) -> str | None:
    """A word made to fit the charset: normalised, accents stripped (``café`` -> ``cafe``); None when
    other foreign characters remain."""
    word = charset.normalise(word)
    if charset.unknown(word):
        decomposed = unicodedata.normalize("NFKD", word)
        word = "".join(c for c in decomposed if not unicodedata.combining(c))
        if charset.unknown(word):
            return None
    return word or None


# --- word statistics ------------------------------------------------------------------------------

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?$")
_TITLES = ("Mr.", "Mrs.", "Dr.", "St.", "Mr.", "Mr.")
_SUFFIX = {1: "st", 2: "nd", 3: "rd"}


def _number(rng: np.random.Generator) -> str:
    """A number written the ways IAM's texts write them."""
    k = rng.random()
    if k < 0.35:
        return str(int(rng.integers(1, 100)))
    if k < 0.52:
        return str(int(rng.integers(1800, 2030)))  # years
    if k < 0.60:
        return f"{int(rng.integers(1, 1000))},{int(rng.integers(0, 1000)):03d}"
    if k < 0.70:
        return f"{int(rng.integers(0, 100))}.{int(rng.integers(0, 100))}"
    if k < 0.80:
        d = int(rng.integers(1, 32))
        return f"{d}{_SUFFIX.get(d % 10 if d not in (11, 12, 13) else 0, 'th')}"
    if k < 0.86:
        return f"{int(rng.integers(1, 13))}.{int(rng.choice([0, 15, 30, 45])):02d}"  # times
    if k < 0.91:
        return f"{int(rng.integers(1, 4))}/{int(rng.integers(2, 9))}"
    return str(int(rng.integers(100, 100_000)))


class WordFreqSource:
    """English prose from word frequencies.

    Words come from ``wordfreq``'s list of the ``vocab`` most frequent English words. The first
    ``function_words`` of them (the, of, and, to, ...) and the rest (content words) are drawn in a
    two-state chain, which gives the alternation of real prose ("the house of a friend") for free.
    Content words are drawn with probability ~ frequency ** ``temperature``: slightly flatter than
    Zipf, so rarer letter combinations appear more often than in raw text.
    """

    def __init__(self, lang: str = "en", *, vocab: int = 30_000, function_words: int = 110,
                 temperature: float = 0.8, charset: Charset = DEFAULT_CHARSET,
                 lengths: LineLength = LineLength()) -> None:
        import wordfreq

        self.lang, self.lengths, self.charset = lang, lengths, charset
        freqs = wordfreq.get_frequency_dict(lang)
        words = [self._fix_case(w) for w in wordfreq.top_n_list(lang, vocab) if self._usable(w)]
        words = [w for w in words if not charset.unknown(w)]
        if len(words) <= function_words:
            raise ValueError(f"wordfreq list for {lang!r} has only {len(words)} usable words")
        p = np.array([freqs.get(w.lower(), 1e-9) for w in words])
        self.function = words[:function_words]
        self.content = words[function_words:]
        self._fcdf = self._cdf(p[:function_words])
        self._ccdf = self._cdf(p[function_words:] ** temperature)

    @staticmethod
    def _usable(w: str) -> bool:
        return bool(_WORD.match(w)) and (len(w) > 1 or w in ("a", "i"))

    @staticmethod
    def _fix_case(w: str) -> str:
        return "I" + w[1:] if w == "i" or w.startswith("i'") else w  # wordfreq lower-cases "I'm"

    @staticmethod
    def _cdf(p: np.ndarray) -> np.ndarray:
        c = np.cumsum(p)
        return c / c[-1]

    def describe(self) -> str:
        return f"wordfreq:{self.lang}"

    def _draw(self, rng: np.random.Generator, function: bool) -> str:
        cdf, words = (self._fcdf, self.function) if function else (self._ccdf, self.content)
        return words[min(int(np.searchsorted(cdf, rng.random())), len(words) - 1)]

    def sentence(self, rng: np.random.Generator) -> list[str]:
        """One sentence as a list of tokens, punctuation attached."""
        n = int(np.clip(rng.gamma(2.5, 7.0), 3, 45))
        function = rng.random() < 0.6
        words: list[str] = []
        content: list[bool] = []
        for _ in range(n):
            word = self._draw(rng, function)
            words.append(word if function else self._content_variant(word, rng))
            content.append(not function)
            function = rng.random() < (0.3 if function else 0.6)
        return self._punctuate(words, content, rng)

    @staticmethod
    def _content_variant(word: str, rng: np.random.Generator) -> str:
        k = rng.random()
        if k < 0.03:
            return _number(rng)
        if k < 0.09:
            return word[0].upper() + word[1:]  # names and places, which wordfreq lower-cases
        if k < 0.094:
            return word.upper()
        return word

    @staticmethod
    def _punctuate(words: list[str], content: list[bool], rng: np.random.Generator) -> list[str]:
        for i in range(len(words) - 1):
            k = rng.random()
            if not content[i]:
                if k < 0.01:
                    words[i] += ","  # "and, ..." is rare but real
                continue
            if k < 0.11:
                words[i] += ","
            elif k < 0.118:
                words[i] += ";"
            elif k < 0.126:
                words[i] += ":"
            elif k < 0.18 and content[i + 1] and words[i].isalpha() and words[i + 1].isalpha():
                words[i] += "-"  # compound: joined with the next word below
            elif k < 0.185 and content[i + 1] and words[i].isalpha():
                words[i] += "/"
        words = _join_marked(words)
        words = ["&" if w == "and" and rng.random() < 0.08 else w for w in words]
        if rng.random() < 0.015:
            words.insert(int(rng.integers(0, len(words))), str(rng.choice(["-", "+", "*"])))
        if rng.random() < 0.01:
            words.insert(int(rng.integers(0, len(words))), f"#{int(rng.integers(1, 100))}")
        if rng.random() < 0.03:
            i = int(rng.integers(0, len(words)))
            words[i:i + 1] = [str(rng.choice(_TITLES)), words[i][:1].upper() + words[i][1:]]
        words[0] = words[0][:1].upper() + words[0][1:]
        end = rng.choice([".", "?", "!", "...", ":"], p=[0.82, 0.08, 0.06, 0.02, 0.02])
        words[-1] = words[-1].rstrip(",;:-/") + str(end)
        _wrap_span(words, rng, 0.12, '"', '"')
        _wrap_span(words, rng, 0.04, "(", ")")
        _wrap_span(words, rng, 0.015, "'", "'")
        return words

    def sample(self, rng: np.random.Generator) -> str:
        target = self.lengths.sample(rng)
        tokens = self.sentence(rng)
        # IAM lines are cut from running text: most start somewhere inside a sentence.
        start = int(rng.integers(0, len(tokens))) if rng.random() < 0.7 else 0
        tokens = tokens[start:]
        while sum(len(t) + 1 for t in tokens) <= target + 1:
            tokens += self.sentence(rng)
        return wrap_line(tokens, 0, target)


def _join_marked(words: list[str]) -> list[str]:
    """Join each word ending in "-" or "/" (as marked by the punctuator) to the word after it."""
    out: list[str] = []
    for w in words:
        if out and out[-1][-1:] in ("-", "/") and out[-1][:-1].isalpha():
            out[-1] += w
        else:
            out.append(w)
    return out


def _wrap_span(words: list[str], rng: np.random.Generator, p: float, left: str, right: str) -> None:
    """With probability ``p``, put ``left``/``right`` around a random run of words, in place."""
    if rng.random() >= p or not words:
        return
    i = int(rng.integers(0, len(words)))
    j = min(len(words) - 1, i + int(rng.integers(0, 6)))
    words[i] = left + words[i]
    words[j] = words[j] + right


# --- IAM's punctuation spacing ------------------------------------------------------------------------

# IAM's transcriptions (lines.txt) tokenise punctuation as words: ``he said , " that 's it . "``. The
# writers wrote ``he said, "that's it."``, so the spaces IAM adds are not gaps on the page.
_OPENING = ("(", '"', "'")
_CLOSING = (",", ".", ";", ":", "!", "?", ")", '"', "'")
_ABBREVIATIONS = frozenset(("Mr.", "Mrs.", "Dr.", "St.", "Ms.", "Co.", "Ltd.", "No.", "etc."))


def _iam_tokens(word: str) -> list[str]:
    if word in ("'s", "...") or not any(ch.isalnum() for ch in word):
        return [word]  # already a token of its own (or a symbol such as "-")
    lead: list[str] = []
    while len(word) > 1 and word[0] in _OPENING:
        lead.append(word[0])
        word = word[1:]
    trail: list[str] = []
    while len(word) > 1 and word not in _ABBREVIATIONS:
        if word.endswith("...") and len(word) > 3:
            trail.append("...")
            word = word[:-3]
        elif word[-1] in _CLOSING:
            trail.append(word[-1])
            word = word[:-1]
        else:
            break
    if len(word) > 2 and word.endswith("'s") and word[-3].isalpha():
        trail.append("'s")
        word = word[:-2]
    return lead + [word] + trail[::-1]


def iam_spacing(text: str) -> str:
    r"""``text`` tokenised as IAM's transcriptions are: punctuation marks (but not those inside words or
    of abbreviations such as ``Mr.``) and ``'s`` become words of their own. Idempotent.

    >>> iam_spacing('He said, "that\'s it." Mr. Brown (aged 3.5) left...')
    'He said , " that \'s it . " Mr. Brown ( aged 3.5 ) left ...'
    """
    return " ".join(t for word in text.split(" ") if word for t in _iam_tokens(word))


def detached_gaps(words: Sequence[str]) -> list[bool]:
    r"""For each space between ``words``, whether it is one that IAM's tokenisation puts where a writer
    leaves none: before closing punctuation or ``'s``, after an opening bracket or quote. Lone quotes
    are taken as opening and closing in turn (a first one at the end of the line closes).

    >>> detached_gaps('he said , " that \'s it . "'.split())
    [False, True, False, True, True, False, True, True]
    """
    opening = [False] * len(words)
    quotes = {'"': 0, "'": 0}
    for i, w in enumerate(words):
        if w in quotes:
            opening[i] = quotes[w] % 2 == 0 and i + 1 < len(words)
            quotes[w] += 1
        elif w == "(":
            opening[i] = i + 1 < len(words)
    closing = [w in ("'s", "...") or (len(w) > 0 and all(ch in _CLOSING for ch in w)) and not opening[i]
               for i, w in enumerate(words)]
    return [opening[i] or closing[i + 1] for i in range(len(words) - 1)]


class IamSpacing:
    """Any text source with a fraction ``p`` of its lines tokenised like IAM's (:func:`iam_spacing`)."""

    def __init__(self, source: TextSource, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"iam_spacing_p is a probability, got {p}")
        self.source, self.p = source, p

    def describe(self) -> str:
        return f"{self.source.describe()}+iam_spacing:{self.p:g}"

    def sample(self, rng: np.random.Generator) -> str:
        text = self.source.sample(rng)
        return iam_spacing(text) if rng.random() < self.p else text


# --- text files and line stores ---------------------------------------------------------------------


class ProseSource:
    """Lines cut from running text: its words, cleaned to the charset, in order; each sample starts at
    a random word and is word-wrapped to an IAM-like length. Words with characters that cannot be
    mapped into the charset are dropped (``skipped_words`` counts them). Real prose carries what word
    statistics cannot: which word follows which ("in view of", "the main topics")."""

    def __init__(self, passages: Iterable[str], name: str, *, charset: Charset = DEFAULT_CHARSET,
                 lengths: LineLength = LineLength()) -> None:
        self.name = name
        self.lengths = lengths
        self.words: list[str] = []
        self.skipped_words = 0
        for passage in passages:
            for token in passage.split():
                word = clean_word(token, charset)
                if word is None:
                    self.skipped_words += 1
                else:
                    self.words.append(word)
        if not self.words:
            raise ValueError(f"{name}: corpus has no words that fit the charset")

    def describe(self) -> str:
        return self.name

    def sample(self, rng: np.random.Generator) -> str:
        return wrap_line(self.words, int(rng.integers(0, len(self.words))), self.lengths.sample(rng))

    def lines(self) -> list[str]:
        """Every word once, in order, wrapped into lines of the mean target length: the whole text as
        a language model learns it."""
        out: list[str] = []
        i, target = 0, round(self.lengths.mean)
        while i < len(self.words):
            line = wrap_line(self.words[i:i + target], 0, target)
            out.append(line)
            i += line.count(" ") + 1
        return out


class TextFileSource(ProseSource):
    """:class:`ProseSource` over one UTF-8 text file."""

    def __init__(self, path: str | os.PathLike, *, charset: Charset = DEFAULT_CHARSET,
                 lengths: LineLength = LineLength()) -> None:
        self.path = Path(path)
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.path}: no such corpus file") from None
        except IsADirectoryError:
            raise ValueError(f"{self.path}: a corpus is a text file, not a folder") from None
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.path}: corpus must be UTF-8 text ({e})") from e
        super().__init__([raw], f"file:{self.path.name}", charset=charset, lengths=lengths)


# Debian's English fortune collections (``apt-get install fortunes``: quotations, verse, dialogue,
# anecdotes) that read as prose; left out are the ones of code, ASCII art, jargon definitions, puns in
# made-up words and one system's tips.
FORTUNE_COLLECTIONS = (
    "art", "cookie", "drugs", "education", "food", "fortunes", "goedel", "humorists", "kids", "law",
    "literature", "love", "magic", "medicine", "men-women", "miscellaneous", "news", "paradoxum",
    "people", "pets", "platitudes", "politics", "science", "songs-poems", "sports", "tao", "wisdom",
    "work",
)
_MARKUP = re.compile(r"[<>|{}_=@#\\^~`$]|\.\.\.\.")  # code, ASCII art, "...." ornaments


def fortunes_dir() -> Path:
    """Where the fortune collections are: ``$TEXTREC_FORTUNES_DIR``, else Debian's place for them."""
    return Path(os.environ.get("TEXTREC_FORTUNES_DIR", "/usr/share/games/fortunes"))


def fortune_passages(directory: Path | None = None,
                     collections: Sequence[str] = FORTUNE_COLLECTIONS) -> list[str]:
    """The passages ("cookies", separated by lines holding only ``%``) of the fortune ``collections``
    in ``directory``, each with its whitespace collapsed. Passages that look like code, ASCII art or
    markup (:data:`_MARKUP`) or hold fewer than four words are dropped. Collections missing from the
    folder are skipped; none at all is an error that says how to install them."""
    directory = directory or fortunes_dir()
    files = [directory / c for c in collections if (directory / c).is_file()]
    if not files:
        raise FileNotFoundError(
            f"corpus 'fortunes': no fortune collections in {directory} (apt-get install fortunes, which "
            f"`make install` runs as root; or set TEXTREC_FORTUNES_DIR)")
    out = []
    for f in files:
        for cookie in re.split(r"^%\s*$", f.read_text(encoding="utf-8", errors="replace"), flags=re.M):
            if "\ufffd" in cookie or _MARKUP.search(cookie):
                continue
            text = " ".join(cookie.split())
            if text.count(" ") >= 3:
                out.append(text)
    return out


class MixedSource:
    """Each line from one of several sources, drawn with probability proportional to its weight."""

    def __init__(self, parts: Sequence[tuple[TextSource, float]]) -> None:
        if not parts:
            raise ValueError("a mixed corpus needs at least one source")
        weights = np.array([w for _, w in parts], dtype=float)
        if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
            raise ValueError(f"corpus weights must be finite and > 0, got {weights.tolist()}")
        self.sources = [s for s, _ in parts]
        self.weights = weights / weights.sum()
        self._cdf = np.cumsum(self.weights)

    def describe(self) -> str:
        return "+".join(f"{s.describe()}*{w:.3g}" for s, w in zip(self.sources, self.weights, strict=True))

    def sample(self, rng: np.random.Generator) -> str:
        k = min(int(np.searchsorted(self._cdf, rng.random(), side="right")), len(self.sources) - 1)
        return self.sources[k].sample(rng)


class StoreTextSource:
    """Transcriptions of an existing line store, drawn uniformly. Only the ``split`` split is used
    (``train`` by default) so that synthetic training data never repeats a test line's text."""

    def __init__(self, path: str | os.PathLike, *, split: str | None = "train",
                 charset: Charset = DEFAULT_CHARSET) -> None:
        from textrec.data.store import LineStore

        self.path = Path(path)
        self.split = split
        store = LineStore(self.path)
        texts = [store.texts[i] for i in store.indices(split)]
        self.texts = [t for t in (charset.normalise(t) for t in texts) if t and not charset.unknown(t)]
        if not self.texts:
            raise ValueError(f"{self.path}: no transcriptions in split {split!r} fit the charset")

    def describe(self) -> str:
        return f"store:{self.path.name}:{self.split or 'all'}"

    def sample(self, rng: np.random.Generator) -> str:
        return self.texts[int(rng.integers(0, len(self.texts)))]


CORPUS_NAMES = ("wordfreq", "fortunes")


@dataclass(frozen=True)
class CorpusPart:
    name: str  # one of CORPUS_NAMES, or a path
    weight: float = 1.0
    optional: bool = False  # written NAME?: left out (with a warning) where it is not installed

    def present(self) -> bool:
        if self.name == "wordfreq":
            return True
        if self.name == "fortunes":
            return any((fortunes_dir() / c).is_file() for c in FORTUNE_COLLECTIONS)
        return Path(self.name).exists()


def parse_corpus(corpus: str | os.PathLike) -> list[CorpusPart]:
    """A corpus spec -> its parts. A spec is one source or several joined by ``+``, each optionally
    weighted with ``*W`` (``wordfreq*2+fortunes``: two lines of word statistics for each of prose) and
    marked optional with a trailing ``?`` (``wordfreq+fortunes?``: the fortunes where they are
    installed). A part is a name of :data:`CORPUS_NAMES` or a path; a path that exists is always one
    part, whatever characters its name holds."""
    text = os.fspath(corpus).strip()
    if not text:
        raise ValueError("corpus spec is empty")
    if text in CORPUS_NAMES or Path(text).exists():
        return [CorpusPart(text)]
    parts = []
    for piece in text.split("+"):
        piece = piece.strip()
        optional = piece.endswith("?")
        piece = piece.removesuffix("?").strip()
        name, star, weight = piece.rpartition("*") if "*" in piece else (piece, "", "")
        optional = optional or name.strip().endswith("?")  # NAME?*W reads as NAME*W?
        name = name.strip().removesuffix("?").strip()
        if not name:
            raise ValueError(f"corpus {text!r}: an empty part (expected NAME[*WEIGHT][?]+...)")
        try:
            w = float(weight) if star else 1.0
        except ValueError:
            raise ValueError(f"corpus {text!r}: weight {weight!r} of {name!r} is not a number") from None
        if not (w > 0 and np.isfinite(w)):
            raise ValueError(f"corpus {text!r}: weight of {name!r} must be finite and > 0, got {weight}")
        parts.append(CorpusPart(name, w, optional))
    return parts


def available_parts(corpus: str | os.PathLike, *, allow_none: bool = False) -> list[CorpusPart]:
    """The parts of a spec that will be read: optional parts that are not installed are left out with
    a warning; an error when none is left, unless ``allow_none``."""
    import warnings

    parts = parse_corpus(corpus)
    kept = [p for p in parts if not p.optional or p.present()]
    for p in parts:
        if p not in kept:
            warnings.warn(f"corpus {os.fspath(corpus)!r}: optional part {p.name!r} is not installed; "
                          f"reading without it", stacklevel=3)
    if not kept and not allow_none:
        raise FileNotFoundError(f"corpus {os.fspath(corpus)!r}: none of its optional parts is installed")
    return kept


def corpus_key(corpus: str) -> str:
    """What a corpus spec reads here, for cache keys: the spec itself, plus the optional parts that are
    missing on this machine (installing one then renews what was rendered without it)."""
    if not corpus.strip():
        return corpus
    missing = [p.name for p in parse_corpus(corpus) if p.optional and not p.present()]
    return corpus + (f" without {'+'.join(missing)}" if missing else "")


def _open_part(part: str, charset: Charset) -> TextSource:
    if part == "wordfreq":
        return WordFreqSource(charset=charset)
    if part == "fortunes":
        return ProseSource(fortune_passages(), "fortunes", charset=charset)
    if Path(part).suffix.lower() in (".h5", ".hdf5"):
        return StoreTextSource(Path(part), charset=charset)
    if not Path(part).exists():
        raise FileNotFoundError(f"corpus part {part!r}: no such file, and not one of {', '.join(CORPUS_NAMES)}")
    return TextFileSource(Path(part), charset=charset)


def open_text_source(corpus: str | os.PathLike | None = None, *, charset: Charset = DEFAULT_CHARSET,
                     iam_spacing_p: float = 0.0) -> TextSource:
    """The source for a ``corpus`` spec (:func:`parse_corpus`): word statistics when None or
    ``wordfreq``, Debian's fortune collections for ``fortunes``, a line store's transcriptions for an
    ``.h5``/``.hdf5`` file, otherwise a text file; several parts mix by weight (optional parts that
    are not installed left out: :func:`available_parts`). With ``iam_spacing_p``
    of its lines spaced like IAM's."""
    source: TextSource
    if corpus is None or not os.fspath(corpus).strip():
        source = WordFreqSource(charset=charset)
    else:
        opened = [(_open_part(p.name, charset), p.weight) for p in available_parts(corpus)]
        source = opened[0][0] if len(opened) == 1 else MixedSource(opened)
    return IamSpacing(source, iam_spacing_p) if iam_spacing_p > 0 else source


def corpus_lines(corpus: str | os.PathLike, *, charset: Charset = DEFAULT_CHARSET) -> list[str]:
    """The whole running text of a corpus spec's prose parts (text files, ``fortunes``) as lines, for a
    language model; word statistics and line stores have no running text of their own and add none.
    A spec with no prose part at all is an error; one whose parts are all optional and not installed
    gives no lines (with a warning)."""
    lines: list[str] = []
    parts = available_parts(corpus, allow_none=True)
    for part in parts:
        source = _open_part(part.name, charset)
        if isinstance(source, ProseSource):
            lines += source.lines()
    if not lines and parts:
        raise ValueError(f"corpus {os.fspath(corpus)!r} has no running text for a language model "
                         f"(name a text file or fortunes)")
    return lines
