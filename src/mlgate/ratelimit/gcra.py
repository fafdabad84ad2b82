"""GCRA, the generic cell rate algorithm, as integer arithmetic in microseconds.

A key's whole state is one number, its *theoretical arrival time* (TAT): the instant at
which its bucket would be full again. Each unit of cost pushes the TAT one *emission
interval* T = period / rate further; a request is admitted when the pushed TAT lies no
more than ``burst × T`` ahead of now. A fresh key therefore admits exactly ``burst``
units at once (the k-th unit lands at ``now + k·T``, admitted while ``k ≤ burst``) and
then one more unit every T.

Everything is an integer number of microseconds so that the comparison at the edge is
exact (with floats ``now + N·T − N·T`` may miss ``now`` by one ulp and turn away the
N-th request), and so that the Redis Lua script, whose numbers are doubles, computes
the very same values: microsecond timestamps stay far below 2**53. The Lua twin of
:func:`step` lives in :mod:`mlgate.ratelimit.redis_backend`; keep the two in step.
"""

from __future__ import annotations

MICROSECONDS = 1_000_000
MAX_BUCKET_US = 2**50
"""Longest a full bucket may take to drain (about 35 years): keeps every TAT, and every
sum the Lua script forms, far below 2**53 where doubles stop counting microseconds."""


def emission_interval_us(rate: int, period_us: int) -> int:
    """Microseconds one unit of cost occupies, rounded up (never more than `rate` a period).

    Rounding up keeps the limit exact whenever `period_us` is a multiple of `rate` (the
    usual 10, 100 or 1000 a minute) and otherwise errs by under a microsecond per unit
    on the strict side.
    """
    return max(1, -(-period_us // rate))


def step(
    stored_tat: int | None, now: int, emission: int, burst: int, cost: int
) -> tuple[bool, int]:
    """Admit or refuse `cost` units; return (allowed, TAT to keep afterwards).

    A refusal leaves the state as it was: ``max(stored_tat, now)`` is returned only so
    that the caller can describe the bucket.
    """
    tat = now if stored_tat is None or stored_tat < now else stored_tat
    new_tat = tat + cost * emission
    if new_tat - burst * emission > now:
        return False, tat
    return True, new_tat


def remaining(tat: int, now: int, emission: int, burst: int) -> int:
    """Units of cost that would still be admitted at `now`, between 0 and `burst`."""
    free = (now + burst * emission - tat) // emission
    return max(0, min(burst, free))


def reset_after_us(tat: int, now: int) -> int:
    """Microseconds until the bucket is full again."""
    return max(0, tat - now)


def retry_after_us(tat: int, now: int, emission: int, burst: int, cost: int) -> int:
    """Microseconds until `cost` units would be admitted (0 if they would be now).

    Meaningless when `cost` exceeds `burst`: such a request is never admitted.
    """
    return max(0, tat + cost * emission - burst * emission - now)
