"""Rate limiting with GCRA, in process memory or in Redis (shared by workers).

    limiter = build_rate_limiter(settings.rate_limit, settings.redis_url)
    decision = await limiter.hit(f"rows:{principal}", tier.rows_limit(), cost=len(rows))
    if not decision.allowed: ...  # 429 with decision.headers()

Wiring it into HTTP is the API layer's business; this package knows nothing of requests.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlgate.ratelimit.base import (
    Decision,
    Hit,
    Limit,
    RateLimiter,
    RateLimiterUnavailable,
    build_rate_limiter,
    strictest,
)
from mlgate.ratelimit.client_ip import client_ip, client_network
from mlgate.ratelimit.memory import MemoryRateLimiter
from mlgate.ratelimit.settings import RateLimitSettings, TierLimits

if TYPE_CHECKING:
    from mlgate.ratelimit.redis_backend import RedisRateLimiter

__all__ = [
    "Decision",
    "Hit",
    "Limit",
    "MemoryRateLimiter",
    "RateLimitSettings",
    "RateLimiter",
    "RateLimiterUnavailable",
    "RedisRateLimiter",
    "TierLimits",
    "build_rate_limiter",
    "client_ip",
    "client_network",
    "strictest",
]


def __getattr__(name: str) -> Any:
    # Imported on first use, so that processes without Redis never load the redis package.
    if name == "RedisRateLimiter":
        from mlgate.ratelimit.redis_backend import RedisRateLimiter

        return RedisRateLimiter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
