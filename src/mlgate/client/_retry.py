"""When and how long to wait before repeating a call.

Only calls that are safe to repeat are retried (predictions, reads, idempotent admin
writes such as revoking a key); a call that changes state is retried only when the
request provably never reached the server (the connection could not be opened).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import httpx

from mlgate.client._exceptions import (
    APIError,
    MlgateClientError,
    RateLimited,
    ServerUnavailable,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded by attempts and by total time.

    A ``Retry-After`` from the server (429, 503) is waited for as given (plus up to
    ``retry_after_jitter`` of it, so that many clients told the same second do not come
    back together); a wait that would end past ``max_elapsed_s`` is not started: the
    error is raised at once.
    """

    max_attempts: int = 5
    """Tries in all, the first included (1: never retry)."""
    backoff_base_s: float = 0.2
    """The first backoff's upper bound; it doubles with each retry."""
    backoff_max_s: float = 10.0
    """The largest backoff without ``Retry-After``."""
    max_elapsed_s: float = 60.0
    """No retry starts later than this many seconds after the first try."""
    retry_after_jitter: float = 0.1
    """Up to this fraction of a ``Retry-After`` is added at random."""
    max_retry_after_s: float = 120.0
    """A longer ``Retry-After`` is not waited for (the error is raised)."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.backoff_base_s < 0 or self.backoff_max_s < 0 or self.max_elapsed_s < 0:
            raise ValueError("backoff and elapsed bounds must not be negative")

    def backoff(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1, 2, …) without ``Retry-After``."""
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2 ** (retry - 1))
        return self.rng.uniform(0, ceiling)

    def wait(self, retry: int, retry_after: float | None) -> float | None:
        """Seconds to wait before retry number ``retry``; None: do not retry."""
        if retry_after is None:
            return self.backoff(retry)
        if retry_after > self.max_retry_after_s:
            return None
        return retry_after * (1 + self.rng.uniform(0, self.retry_after_jitter))


NO_RETRY = RetryPolicy(max_attempts=1)


def retryable(error: MlgateClientError | httpx.TransportError, *, idempotent: bool) -> bool:
    """Whether a failed try may be repeated."""
    if isinstance(error, httpx.TransportError):
        # A connection that was never opened carried no request: always safe.
        never_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
        return never_sent or idempotent
    if isinstance(error, RateLimited | ServerUnavailable):
        return idempotent
    return False


def retry_after(error: MlgateClientError | httpx.TransportError) -> float | None:
    """The server's ``Retry-After`` for this error, if it gave one."""
    if isinstance(error, RateLimited | ServerUnavailable):
        return error.retry_after
    if isinstance(error, APIError):
        return None
    return None
