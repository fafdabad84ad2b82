"""The prediction cache on each backend: memory, and a real Redis under a key prefix of
the test's own (deleted afterwards)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.ratelimit.conftest import scratch_prefix


@pytest.fixture(params=["memory", "redis"])
async def cache_settings(request: pytest.FixtureRequest) -> AsyncIterator[dict[str, Any]]:
    """Settings overrides for an app whose cache uses each backend in turn."""
    if request.param == "memory":
        yield {"cache": {"backend": "memory"}}
        return
    url = request.getfixturevalue("redis_url")
    async with scratch_prefix(url) as prefix:
        yield {"redis_url": url, "cache": {"backend": "redis", "redis_key_prefix": prefix}}
