"""Prediction cache configuration (``MLGATE_CACHE__*``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CacheSettings(BaseModel):
    """The exact-match prediction cache: off unless a model opts in."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    backend: Literal["memory", "redis"] = "memory"
    """memory: a bounded LRU per worker; redis: shared by every worker and replica
    (needs MLGATE_REDIS_URL)."""
    models: list[str] = Field(default_factory=list)
    """Models whose answers are cached, besides those whose model.yaml says `cache:`."""
    ttl_s: float = Field(default=300.0, gt=0, le=30 * 24 * 3600)
    """How long an answer is reused (a model's `cache.ttl_s` in model.yaml wins)."""
    max_rows: int = Field(default=1000, ge=1, le=100_000)
    """Requests with more rows are scored without the cache (X-Cache: MISS)."""
    max_entries: int = Field(default=10_000, ge=1)
    """Answers the memory backend keeps per worker; the least recently used go first."""
    redis_key_prefix: str = "mlgate:cache:"
    """Prefix of every cache key in Redis."""
    redis_timeout_s: float = Field(default=0.1, gt=0, le=10)
    """Redis connect and read timeout: a slow Redis costs a miss, not a slow answer."""
    outage_retry_s: float = Field(default=1.0, gt=0, le=600)
    """After a Redis error, skip the cache (every request a miss) this long before trying again."""
