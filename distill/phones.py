"""Phone spellings for CTC: every word spelled by espeak-ng (US English IPA), one call per word.

The units are espeak-ng's IPA phones with stress marks dropped (``kitchen`` → ``k ɪ tʃ ə n``).
A lexicon covers the context's words (what the hub's grammar decoder spells) and every word
of the training transcripts (negatives say other words); it travels with the student
checkpoint and, later, the bundle, so the hub needs no espeak-ng.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable

from assistant.context.normalize import normalize_text
from assistant.errors import ConfigError
from assistant.grammar import Lexicon

ESPEAK = "espeak-ng"
STRESS = str.maketrans("", "", "ˈˌ")
"""Primary and secondary stress marks: not units of their own."""
TIMEOUT_S = 10.0


class PhonemizeError(ConfigError):
    """espeak-ng is missing or failed on a word."""


def phonemize(word: str, voice: str = "en-us", binary: str = ESPEAK) -> tuple[str, ...]:
    """``word``'s phones as espeak-ng says them with ``voice``."""
    if shutil.which(binary) is None:
        raise PhonemizeError(f"{binary} not found: install it (Debian: apt install espeak-ng) to spell words in phones")
    try:
        done = subprocess.run([binary, "-q", "-v", voice, "--ipa", "--sep=_", word], capture_output=True, text=True,
                              timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise PhonemizeError(f"{binary} took more than {TIMEOUT_S:.0f} s on {word!r}") from exc
    if done.returncode != 0:
        raise PhonemizeError(f"{binary} failed on {word!r} (exit {done.returncode}): {done.stderr.strip()}")
    text = done.stdout.translate(STRESS).replace(" ", "_").replace("\n", "_")
    phones = tuple(p for p in text.split("_") if p)
    if not phones:
        raise PhonemizeError(f"{binary} gave no phones for {word!r}")
    return phones


def make_lexicon(words: Iterable[str], voice: str = "en-us") -> Lexicon:
    """A lexicon of the words of ``words`` (texts normalized as :meth:`Lexicon.encode` reads transcripts);
    its units are the phones they use, sorted."""
    spelled = {w: phonemize(w, voice) for w in sorted({w for text in words for w in normalize_text(text).split()})}
    if not spelled:
        raise PhonemizeError("no words to spell")
    return Lexicon(tuple(sorted({p for phones in spelled.values() for p in phones})), spelled)
