"""Text normalization, so that written and spoken forms of a sentence agree.

``normalize_text`` turns any text (an expression's words, a slot value, a transcript)
into the lowercase, space-separated words a person would say:

- Unicode NFKC, lowercase, every apostrophe-like mark unified to ``'``;
- numbers become words: ``21`` -> ``twenty one``, ``3.5`` -> ``three point five``,
  ``1,000`` -> ``one thousand``, ``-5`` -> ``minus five``, ``05`` -> ``zero five``,
  ordinals ``1st`` -> ``first``, times ``7:30`` -> ``seven thirty``, fractions
  ``1/2`` -> ``one half``; numbers glued to letters are split (``mp3`` -> ``mp three``);
- a few symbols are spoken: ``%`` percent, ``°`` degrees, ``&`` and, ``+`` plus;
- every other punctuation mark becomes a space (so ``twenty-one`` -> ``twenty one``),
  apostrophes are kept only inside words (``what's``), whitespace is collapsed.

It is idempotent: ``normalize_text(normalize_text(s)) == normalize_text(s)``.
"""

from __future__ import annotations

import re
import unicodedata

_ONES = [
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
]
_TENS = ["_", "_", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
_SCALES = ("", "thousand", "million", "billion", "trillion", "quadrillion", "quintillion", "sextillion")
_ORDINAL_WORDS = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}
_FRACTIONS = {
    (1, 2): "one half", (1, 3): "one third", (2, 3): "two thirds",
    (1, 4): "one quarter", (3, 4): "three quarters",
}
_SYMBOLS = {"%": " percent ", "°": " degrees ", "&": " and ", "+": " plus "}
_APOSTROPHES = "\u2019\u2018\u02bc\u0060\u00b4\u2032\u201b"

_TIME = re.compile(r"(?<![\d:])(\d{1,2}):(\d{2})(?![\d:])")
_ORDINAL = re.compile(r"(?<![\d.])(\d+)(st|nd|rd|th)\b")
_FRACTION = re.compile(r"(?<![\d./])(\d+)/(\d+)(?![\d/])")
_NEGATIVE = re.compile(r"(?:(?<=\s)|^)-(?=\d)")
_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|\d+(?:\.\d+)?")
_NOT_WORD = re.compile(r"[^\w'\s]|_")
_LOOSE_APOSTROPHE = re.compile(r"(?<!\w)'|'(?!\w)")
_SPACES = re.compile(r"\s+")


def _below_thousand(n: int) -> list[str]:
    words: list[str] = []
    if n >= 100:
        words += [_ONES[n // 100], "hundred"]
        n %= 100
        if n == 0:
            return words
    if n < 20:
        words.append(_ONES[n])
    else:
        words.append(_TENS[n // 10])
        if n % 10:
            words.append(_ONES[n % 10])
    return words


def number_to_words(n: int) -> str:
    """Say a non-negative integer in (American) English: 121 -> 'one hundred twenty one'."""
    if n < 0:
        return "minus " + number_to_words(-n)
    if n < 1000:
        return " ".join(_below_thousand(n))
    groups: list[int] = []
    rest = n
    while rest:
        groups.append(rest % 1000)
        rest //= 1000
    if len(groups) > len(_SCALES):
        return _digits(str(n))
    words: list[str] = []
    for index in range(len(groups) - 1, -1, -1):
        if groups[index]:
            words += _below_thousand(groups[index])
            if _SCALES[index]:
                words.append(_SCALES[index])
    return " ".join(words)


def ordinal_to_words(n: int) -> str:
    """Say an ordinal: 1 -> 'first', 22 -> 'twenty second', 100 -> 'one hundredth'."""
    words = number_to_words(n).split()
    last = words[-1]
    if last in _ORDINAL_WORDS:
        words[-1] = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return " ".join(words)


def _digits(text: str) -> str:
    return " ".join(_ONES[int(d)] for d in text)


def _say_integer(text: str) -> str:
    text = text.replace(",", "")
    if len(text) > 1 and text.startswith("0"):
        return _digits(text)
    if len(text) > 3 * len(_SCALES):
        return _digits(text)
    return number_to_words(int(text))


def _say_number(match: re.Match[str]) -> str:
    whole, _, fraction = match.group(0).partition(".")
    spoken = _say_integer(whole)
    if fraction:
        spoken += " point " + _digits(fraction)
    return f" {spoken} "


def _say_time(match: re.Match[str]) -> str:
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes >= 60:
        return f" {number_to_words(hours)} {_say_integer(match.group(2))} "
    if minutes == 0:
        return f" {number_to_words(hours)} o'clock "
    if minutes < 10:
        return f" {number_to_words(hours)} oh {number_to_words(minutes)} "
    return f" {number_to_words(hours)} {number_to_words(minutes)} "


def _say_fraction(match: re.Match[str]) -> str:
    numerator, denominator = int(match.group(1)), int(match.group(2))
    if (numerator, denominator) in _FRACTIONS:
        return f" {_FRACTIONS[(numerator, denominator)]} "
    return f" {number_to_words(numerator)} over {number_to_words(denominator)} "


def normalize_text(text: str) -> str:
    """The spoken form of ``text``: lowercase words separated by single spaces (see module doc)."""
    s = unicodedata.normalize("NFKC", text).replace("\u2044", "/")
    for mark in _APOSTROPHES:
        s = s.replace(mark, "'")
    s = s.lower()
    s = _TIME.sub(_say_time, s)
    s = _ORDINAL.sub(lambda m: f" {ordinal_to_words(int(m.group(1)))} ", s)
    s = _FRACTION.sub(_say_fraction, s)
    s = _NEGATIVE.sub(" minus ", s)
    s = _NUMBER.sub(_say_number, s)
    for symbol, spoken in _SYMBOLS.items():
        s = s.replace(symbol, spoken)
    s = _NOT_WORD.sub(" ", s)
    s = _LOOSE_APOSTROPHE.sub(" ", s)
    return _SPACES.sub(" ", s).strip()
