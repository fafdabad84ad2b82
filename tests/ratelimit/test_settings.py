"""Rate-limit settings: defaults, validation, resolving a principal's limits, the factory."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mlgate.ratelimit import (
    Limit,
    MemoryRateLimiter,
    RateLimitSettings,
    TierLimits,
    build_rate_limiter,
)
from mlgate.ratelimit.redis_backend import RedisRateLimiter


def test_defaults() -> None:
    settings = RateLimitSettings()
    assert settings.backend == "memory"
    assert {name: t.requests_per_minute for name, t in settings.tiers.items()} == {
        "free": 10,
        "pro": 100,
        "enterprise": 1000,
    }
    assert settings.tiers["pro"].rows_limit() == Limit.per_minute(10_000)
    assert settings.login_limit() == Limit.per_minute(10)
    assert settings.failed_auth_limit() == Limit.per_minute(10)


def test_every_field_is_documented() -> None:
    for model in (RateLimitSettings, TierLimits):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name}"


@pytest.mark.parametrize(
    "bad",
    [
        {"backend": "memcached"},
        {"login_per_minute": 0},
        {"failed_auth_per_minute": -1},
        {"redis_timeout_s": 0},
        {"redis_key_prefix": ""},
        {"tiers": {"free": {"requests_per_minute": -5, "rows_per_minute": 10}}},
        {"tiers": {"free": {"requests_per_minute": 5, "rows_per_minute": 10, "burst": 0}}},
        {"tiers": {"free": {"requests_per_minute": 5}}},
        {"tiers": {"gold": {"requests_per_minute": 5, "rows_per_minute": 10}}},
        {"default_tier": "platinum"},
        {"trusted_proxies": ["10.0.0.0/33"]},
        {"trusted_proxies": ["proxy.internal"]},
        {"unknown_field": 1},
    ],
)
def test_invalid_settings_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RateLimitSettings(**bad)


def test_trusted_proxies_are_normalised() -> None:
    settings = RateLimitSettings(trusted_proxies=["10.1.2.3/8", " 192.168.0.1 ", "2001:db8::/32"])
    assert settings.trusted_proxies == ["10.0.0.0/8", "192.168.0.1/32", "2001:db8::/32"]


def test_tier_bursts() -> None:
    tier = TierLimits(requests_per_minute=60, rows_per_minute=600, burst=5, rows_burst=100)
    assert tier.requests_limit() == Limit(rate=60, period=60.0, burst=5)
    assert tier.rows_limit() == Limit(rate=600, period=60.0, burst=100)


def test_limits_for_a_principal() -> None:
    settings = RateLimitSettings()
    assert settings.limits_for("pro") is settings.tiers["pro"]
    assert settings.limits_for(None) is settings.tiers["free"]
    assert settings.limits_for("no-such-tier") is settings.tiers["free"]
    custom = settings.limits_for("pro", {"requests_per_minute": 500})
    assert custom.requests_limit() == Limit.per_minute(500)
    assert custom.rows_per_minute == 10_000


@pytest.mark.parametrize("override", [{"requests_per_minute": 0}, {"rpm": 5}])
def test_bad_overrides_are_refused(override: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RateLimitSettings().limits_for("pro", override)


async def test_factory_builds_the_configured_backend() -> None:
    memory = build_rate_limiter(RateLimitSettings(), None)
    assert isinstance(memory, MemoryRateLimiter)
    settings = RateLimitSettings(backend="redis")
    with pytest.raises(ValueError, match="MLGATE_REDIS_URL"):
        build_rate_limiter(settings, None)
    shared = build_rate_limiter(settings, "redis://127.0.0.1:6379/15")
    assert isinstance(shared, RedisRateLimiter)
    await shared.close()
