"""An error echoes what was wrong, but never more than a bounded amount of it: a 5 MB
bad value gives a short error, not a 10 MB one (the cap is in the one envelope)."""

from __future__ import annotations

import httpx

from mlgate.api.errors import MAX_DETAIL_CHARS, MAX_MESSAGE_CHARS

FEATURES = [0.0] * 77


async def test_a_5_mb_version_gives_a_short_error(client: httpx.AsyncClient) -> None:
    version = "v" * 5_000_000
    response = await client.post(
        "/v1/models/ids/predict", json={"features": FEATURES, "version": version}
    )
    assert response.status_code == 404
    assert len(response.content) < 4 * (MAX_MESSAGE_CHARS + MAX_DETAIL_CHARS)
    error = response.json()["error"]
    assert error["code"] == "version_not_found"
    assert "more characters" in error["message"]
    assert error["details"]["version"].startswith("vvvv")
    assert error["details"]["model"] == "ids"  # short values are left whole


async def test_a_huge_query_value_gives_a_short_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/ids/predict", json={"features": FEATURES}, params={"version": "w" * 60_000}
    )
    assert response.status_code == 404
    assert len(response.content) < 4 * (MAX_MESSAGE_CHARS + MAX_DETAIL_CHARS)


async def test_a_huge_content_type_gives_a_short_error(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/ids/predict",
        content=b"{}",
        headers={"Content-Type": "text/" + "x" * 100_000},
    )
    assert response.status_code == 415
    assert len(response.content) < 4 * (MAX_MESSAGE_CHARS + MAX_DETAIL_CHARS)
