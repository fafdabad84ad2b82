"""Rows are charged once, by the data plane, for input that decoded: a malformed batch
costs the caller no row allowance (it used to spend the whole batch's worth)."""

from __future__ import annotations

from typing import Any

from tests.ratelimit.conftest import limited_app
from tests.ratelimit.test_http_limits import ROW, new_key


async def test_malformed_batches_cost_no_rows(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        # 1,000 rows a minute, and enough requests for the test.
        key = await new_key(app, "rowuser", requests_per_minute=100, rows_per_minute=1000)
        headers = {"X-API-Key": key}
        bad_rows = [ROW] * 999 + [[0.5] * 3]
        for _ in range(3):
            response = await client.post(
                "/v1/models/ids/predict/batch", json={"instances": bad_rows}, headers=headers
            )
            assert response.status_code == 422
        bad_values = [ROW] * 999 + [["x"] * 77]
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": bad_values}, headers=headers
        )
        assert response.status_code == 422
        seed = await client.post(
            "/predict/batch", json=[{"features": ROW}] * 999 + [{"nope": 1}], headers=headers
        )
        assert seed.status_code == 422
        # The whole allowance is still there: 1,000 good rows pass at once...
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": [ROW] * 1000}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert int(response.headers["ratelimit-remaining"]) <= 1
        # ...and it is spent now (500 rows take 30 s to come back).
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": [ROW] * 500}, headers=headers
        )
        assert response.status_code == 429
        assert response.json()["error"]["details"]["limit"] == "rows"


async def test_each_route_charges_its_rows_once(backend: dict[str, Any]) -> None:
    async with limited_app(backend) as (app, client):
        key = await new_key(app, "onceuser", requests_per_minute=100, rows_per_minute=10)
        headers = {"X-API-Key": key}
        calls = [
            ("/v1/models/ids/predict", {"features": ROW}, 1),
            ("/v1/models/ids/predict/batch", {"instances": [ROW, ROW]}, 2),
            ("/predict", {"features": ROW}, 1),
            ("/predict/batch", [{"features": ROW}] * 3, 3),
        ]
        remaining = 10
        for path, body, rows in calls:
            response = await client.post(path, json=body, headers=headers)
            assert response.status_code == 200, response.text
            remaining -= rows
            assert response.headers["ratelimit-remaining"] == str(remaining), path
