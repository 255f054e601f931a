"""normalize_text: written and spoken forms agree."""

from __future__ import annotations

import pytest

from assistant.context import normalize_text, number_to_words, ordinal_to_words


@pytest.mark.parametrize(("text", "spoken"), [
    ("21", "twenty one"),
    ("0", "zero"),
    ("7", "seven"),
    ("15", "fifteen"),
    ("40", "forty"),
    ("100", "one hundred"),
    ("101", "one hundred one"),
    ("1000", "one thousand"),
    ("1,250", "one thousand two hundred fifty"),
    ("2024", "two thousand twenty four"),
    ("1000000", "one million"),
    ("3.5", "three point five"),
    ("0.25", "zero point two five"),
    ("100%", "one hundred percent"),
    ("50 %", "fifty percent"),
    ("1st", "first"),
    ("2nd", "second"),
    ("3rd", "third"),
    ("12th", "twelfth"),
    ("20th", "twentieth"),
    ("22nd", "twenty second"),
    ("-5", "minus five"),
    ("21°", "twenty one degrees"),
    ("7:30", "seven thirty"),
    ("7:05", "seven oh five"),
    ("7:00", "seven o'clock"),
    ("1/2", "one half"),
    ("3/4", "three quarters"),
    ("5/8", "five over eight"),
    ("007", "zero zero seven"),
    ("mp3", "mp three"),
    ("Turn ON the Kitchen Lights!", "turn on the kitchen lights"),
    ("What’s the time?", "what's the time"),
    ("it‘s ʼokʼ", "it's ok"),
    ("'quoted'", "quoted"),
    ("twenty-one", "twenty one"),
    ("rock & roll", "rock and roll"),
    ("  lots   of\tspace\n", "lots of space"),
    ("a, b; c. d", "a b c d"),
    ("snake_case", "snake case"),
    ("café", "café"),
    ("", ""),
    ("?!", ""),
])
def test_normalize_text(text: str, spoken: str) -> None:
    assert normalize_text(text) == spoken


@pytest.mark.parametrize("text", ["Set it to 21.5°C at 7:30, 1st floor (100%)!", "What’s UP", "1/2 a cup"])
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


def test_number_words() -> None:
    assert number_to_words(999_999) == "nine hundred ninety nine thousand nine hundred ninety nine"
    assert number_to_words(1_000_001) == "one million one"
    assert number_to_words(-12) == "minus twelve"
    assert ordinal_to_words(1) == "first"
    assert ordinal_to_words(100) == "one hundredth"
    assert ordinal_to_words(33) == "thirty third"
    # beyond the named scales, numbers are read digit by digit
    assert normalize_text("1" + "0" * 30) == "one" + " zero" * 30
