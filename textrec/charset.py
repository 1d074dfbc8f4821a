"""The one character set: text <-> class indices, with the CTC blank at index 0.

The characters are those of the IAM handwriting database's transcriptions (``ascii/lines.txt``):
letters, digits, space and ``!"#&'()*+,-./:;?``. Every part of textrec that turns text into indices
and back goes through :class:`Charset`, so a model, its data and its decoder always agree.

Text from other sources is normalised with an explicit, documented mapping (:data:`NORMALISE`):
typographic quotes and dashes become their ASCII forms, IAM's ``|`` word separator and any run of
white space become one space. Any other character outside the set raises
:class:`UnknownCharacterError`, which names the character and the text it came from.

Paragraph models read whole pages and write their lines with a line break between them: their charset
(:func:`page_charset`) is this one with :data:`LINE_BREAK` appended as its last character, so every
other character keeps its class index (a line model's outputs and saved weights mean what they did).
A charset that holds the line break normalises each line of a text and keeps the breaks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

IAM_CHARS = " !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

# Explicit mapping applied by Charset.normalise before encoding. Keys are single characters.
NORMALISE: dict[str, str] = {
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u2032": "'", "`": "'", "\u00b4": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
    "\u2010": "-", "\u2011": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-", "\u2212": "-",
    "\u2026": "...",
    "|": " ",  # IAM's word separator in lines.txt
    "\u00a0": " ", "\t": " ", "\n": " ", "\r": " ",
}
_SPACES = re.compile(r" {2,}")
LINE_BREAK = "\n"  # the paragraph models' line-break token: the last character of a page charset


class UnknownCharacterError(ValueError):
    """A text holds a character that the charset cannot encode."""


@dataclass(frozen=True)
class Charset:
    """An ordered set of characters; index 0 is the CTC blank, character i is class i + 1."""

    chars: str = IAM_CHARS

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError(f"charset has repeated characters: {self.chars!r}")
        object.__setattr__(self, "_index", {c: i + 1 for i, c in enumerate(self.chars)})

    blank: int = 0

    @property
    def num_classes(self) -> int:
        """Characters plus the blank: the width of a CTC model's output layer."""
        return len(self.chars) + 1

    def __len__(self) -> int:
        return len(self.chars)

    def __contains__(self, ch: str) -> bool:
        return ch in self._index  # type: ignore[attr-defined]

    def normalise(self, text: str) -> str:
        """Apply :data:`NORMALISE`, collapse runs of spaces and strip the ends.

        >>> Charset().normalise("It\u2019s  a|test\u2014ok")
        "It's a test-ok"
        """
        if LINE_BREAK in self._index:  # type: ignore[attr-defined]  # a page charset: line by line
            return LINE_BREAK.join(self._normalise_line(t) for t in text.split(LINE_BREAK))
        return self._normalise_line(text)

    @staticmethod
    def _normalise_line(text: str) -> str:
        text = "".join(NORMALISE.get(c, c) for c in text)
        return _SPACES.sub(" ", text).strip()

    def unknown(self, text: str) -> list[str]:
        """The distinct characters of ``text`` that are not in the set, in order of appearance."""
        seen: list[str] = []
        for c in text:
            if c not in self._index and c not in seen:  # type: ignore[attr-defined]
                seen.append(c)
        return seen

    def encode(self, text: str, *, normalise: bool = True) -> list[int]:
        """Text -> class indices (1-based; 0 is the blank).

        >>> Charset().encode("Hi!")
        [35, 62, 2]
        >>> Charset().encode("naïve")
        Traceback (most recent call last):
        ...
        textrec.charset.UnknownCharacterError: character 'ï' (U+00EF) is not in the charset, in text 'naïve'
        """
        if normalise:
            text = self.normalise(text)
        bad = self.unknown(text)
        if bad:
            names = ", ".join(f"{c!r} (U+{ord(c):04X})" for c in bad)
            verb = "is" if len(bad) == 1 else "are"
            raise UnknownCharacterError(
                f"character{'s' * (len(bad) > 1)} {names} {verb} not in the charset, in text {text!r}")
        return [self._index[c] for c in text]  # type: ignore[attr-defined]

    def decode(self, indices) -> str:
        """Class indices -> text; blanks are skipped (no CTC collapsing here: see textrec.decoding).

        >>> Charset().decode([35, 0, 62, 2])
        'Hi!'
        """
        n = len(self.chars)
        out = []
        for i in indices:
            i = int(i)
            if i == self.blank:
                continue
            if not 1 <= i <= n:
                raise ValueError(f"class index {i} is outside the charset (1..{n})")
            out.append(self.chars[i - 1])
        return "".join(out)


DEFAULT_CHARSET = Charset()


def page_charset(charset: Charset = DEFAULT_CHARSET) -> Charset:
    """The charset of a paragraph model: ``charset`` with :data:`LINE_BREAK` appended (unchanged if it
    has one), so the other characters keep their indices and the line break is the last class.

    >>> cs = page_charset()
    >>> cs.num_classes, cs.encode("Hi!\\nyou") == DEFAULT_CHARSET.encode("Hi!") + [80] + DEFAULT_CHARSET.encode("you")
    (81, True)
    >>> cs.decode(cs.encode(" It\u2019s  \\n ok ")).split(LINE_BREAK)
    ["It's", 'ok']
    """
    return charset if LINE_BREAK in charset else Charset(charset.chars + LINE_BREAK)


PAGE_CHARSET = page_charset()
