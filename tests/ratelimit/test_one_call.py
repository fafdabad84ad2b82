"""One limiter call per request: the request and its rows, the account's buckets and the
key's cap, together (one Lua round trip on Redis)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mlgate.ratelimit import Decision, Hit, Limit
from tests.ratelimit.conftest import limited_app
from tests.ratelimit.test_http_limits import ROW, new_key


class Counting:
    """Wraps the app's limiter and counts the calls made to it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[list[str]] = []

    async def hit(self, key: str, limit: Limit, cost: int = 1) -> Decision:
        self.calls.append([key])
        decision: Decision = await self.inner.hit(key, limit, cost)
        return decision

    async def hit_many(self, hits: Sequence[Hit]) -> list[Decision]:
        self.calls.append([h.key for h in hits])
        decisions: list[Decision] = await self.inner.hit_many(hits)
        return decisions

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


IDS = [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": [ROW, ROW]}]
CALLS: list[tuple[str, Any]] = [
    ("/v1/models/ids/predict", {"features": ROW}),
    ("/v1/models/ids/predict/batch", {"instances": [ROW] * 3}),
    ("/predict", {"features": ROW}),
    ("/predict/batch", [{"features": ROW}] * 2),
    ("/v2/models/ids/infer", {"inputs": IDS}),
]


async def test_each_inference_request_is_one_limiter_call(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        # A key with a cap of its own: four buckets (requests and rows, key and account).
        key = await new_key(app, "one", "pro", requests_per_minute=50)
        limits = app.state.mlgate.limits
        counting = Counting(limits.limiter)
        limits.limiter = counting
        for path, body in CALLS:
            counting.calls.clear()
            response = await client.post(path, json=body, headers={"X-API-Key": key})
            assert response.status_code == 200, response.text
            assert len(counting.calls) == 1, (path, counting.calls)
            (buckets,) = counting.calls
            assert sorted(b.split(":")[0] for b in buckets) == ["req", "req", "rows", "rows"]
        # A request that fails before its rows are known is charged too, alone.
        counting.calls.clear()
        bad = await client.post(
            "/v1/models/ids/predict", json={"features": [1]}, headers={"X-API-Key": key}
        )
        assert bad.status_code == 422
        assert [sorted(b.split(":")[0] for b in c) for c in counting.calls] == [["req", "req"]]
        # Other routes: the request alone, once.
        counting.calls.clear()
        listing = await client.get("/v1/models", headers={"X-API-Key": key})
        assert listing.status_code == 200
        assert len(counting.calls) == 1 and len(counting.calls[0]) == 2
