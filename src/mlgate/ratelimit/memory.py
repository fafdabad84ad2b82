"""The in-process rate limiter: exact within one process, nothing shared between workers."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from mlgate.ratelimit import gcra
from mlgate.ratelimit.base import Decision, Hit, Limit, validate_hit, validate_hits


def monotonic_us() -> int:
    """Microseconds on the monotonic clock (immune to wall-clock steps)."""
    return time.monotonic_ns() // 1000


class MemoryRateLimiter:
    """GCRA buckets in a dict, for a single worker (the embedded default).

    A hit reads and writes its bucket without awaiting in between, so concurrent tasks
    on the event loop cannot interleave inside it: no lock is needed. Memory stays
    bounded: a bucket whose TAT has passed is full again and equals no entry at all, so
    such entries are swept every `sweep_interval` seconds; beyond `max_keys` live
    entries the least recently hit are forgotten (which only ever admits more).
    """

    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        sweep_interval: float = 10.0,
        clock: Callable[[], int] = monotonic_us,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, got {max_keys}")
        self._max_keys = max_keys
        self._sweep_us = round(sweep_interval * gcra.MICROSECONDS)
        self._clock = clock
        # Insertion order is recency order: a hit pops its key and puts it back last.
        self._tats: dict[str, int] = {}
        self._next_sweep = clock() + self._sweep_us

    @property
    def healthy(self) -> bool:
        """Always True: there is no store to lose."""
        return True

    def __len__(self) -> int:
        """Buckets currently held (full buckets may linger until the next sweep)."""
        return len(self._tats)

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        """Spend `cost` units of `key`'s bucket if they fit."""
        validate_hit(key, cost)
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        allowed, tat = gcra.step(
            self._tats.pop(key, None), now, limit.emission_us, limit.burst, cost
        )
        if tat > now:
            self._tats[key] = tat
            if len(self._tats) > self._max_keys:
                del self._tats[next(iter(self._tats))]
        return Decision.from_state(limit, cost, allowed, tat, now)

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        """Every hit's bucket at once: charged only if all of them admit."""
        validate_hits(hits)
        now = self._clock()
        if now >= self._next_sweep:
            self._sweep(now)
        steps = [
            gcra.step(self._tats.get(h.key), now, h.limit.emission_us, h.limit.burst, h.cost)
            for h in hits
        ]
        admitted = all(allowed for allowed, _ in steps)
        decisions = []
        for h, (allowed, tat) in zip(hits, steps, strict=True):
            if admitted and tat > now:
                self._tats.pop(h.key, None)
                self._tats[h.key] = tat
            elif not admitted and allowed:
                # Not charged after all: describe the bucket as it stays.
                stored = self._tats.get(h.key)
                tat = now if stored is None or stored < now else stored
            decisions.append(Decision.from_state(h.limit, h.cost, allowed, tat, now))
        while len(self._tats) > self._max_keys:
            del self._tats[next(iter(self._tats))]
        return decisions

    async def check(self) -> bool:
        """Always True."""
        return True

    async def close(self) -> None:
        """Forget every bucket."""
        self._tats.clear()

    def _sweep(self, now: int) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        self._next_sweep = now + self._sweep_us
