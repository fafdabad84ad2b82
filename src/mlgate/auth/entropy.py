"""A conservative estimate of how much randomness a secret holds.

Used to refuse patterned secrets in production (``0123456789…``, ``abcabc…``,
``qwerty…``, repeated stretches) that pass a length check. It only ever underestimates
structure it knows (runs along the alphabet, digits or a keyboard row, repeats of an
earlier stretch); it cannot tell that a long English phrase is guessable, so the
documentation still says: generate the secret (``mlgate secret``).
"""

from __future__ import annotations

import itertools
import math
import string

_ORDERED_RUNS = (
    string.ascii_lowercase,
    string.digits,
    "1234567890",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "!@#$%^&*()",
)
# Characters that follow each other along one of the runs, in either direction.
_NEIGHBOURS = frozenset(
    pair for run in _ORDERED_RUNS for a, b in itertools.pairwise(run) for pair in ((a, b), (b, a))
)
_SYMBOLS = 33  # printable ASCII that is neither a letter nor a digit
_CONSIDERED = 256  # characters looked at; a longer secret is judged on its start
_MIN_REPEAT = 3
_PREDICTABLE_BITS = 1.0  # what a character costs that continues a run or repeats the last


def _bits_per_character(secret: str) -> float:
    """log2 of the alphabet the secret draws from (hex counts as 16 symbols)."""
    if all(c in string.digits for c in secret):
        return math.log2(10)
    if all(c in "0123456789abcdef" for c in secret) or all(c in "0123456789ABCDEF" for c in secret):
        return 4.0
    size = 0
    size += 10 if any(c in string.digits for c in secret) else 0
    size += 26 if any(c in string.ascii_lowercase for c in secret) else 0
    size += 26 if any(c in string.ascii_uppercase for c in secret) else 0
    size += _SYMBOLS if any(c in string.punctuation or c == " " for c in secret) else 0
    size += 100 if any(not c.isascii() for c in secret) else 0
    return math.log2(max(size, 2))


def _repeat_length(secret: str, start: int) -> int:
    """Length of the longest stretch at ``start`` that also begins somewhere earlier."""
    length = 0
    while start + length < len(secret) and (
        secret.find(secret[start : start + length + 1], 0, start + length) != -1
    ):
        length += 1
    return length


def estimated_entropy_bits(secret: str) -> float:
    """Bits of randomness ``secret`` holds at most, discounting runs and repeats."""
    text = secret[:_CONSIDERED]
    if not text:
        return 0.0
    per_character = _bits_per_character(text)
    bits = 0.0
    i = 0
    while i < len(text):
        repeat = _repeat_length(text, i) if i else 0
        if repeat >= _MIN_REPEAT:
            bits += per_character  # a copy of an earlier stretch: about one pick
            i += repeat
            continue
        previous = text[i - 1].lower() if i else None
        current = text[i].lower()
        if previous is not None and (previous == current or (previous, current) in _NEIGHBOURS):
            bits += _PREDICTABLE_BITS
        else:
            bits += per_character
        i += 1
    return bits
