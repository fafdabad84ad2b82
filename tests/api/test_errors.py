"""The error contract: every failure is one JSON envelope with the right status."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.conftest import make_settings, running_app

GOOD = [0.5] * 77


def assert_envelope(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"code", "message", "request_id", "details"}
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["x-request-id"]
    assert "Traceback" not in response.text
    return error


async def post_raw(client: httpx.AsyncClient, path: str, body: str | bytes) -> httpx.Response:
    return await client.post(path, content=body, headers={"content-type": "application/json"})


@pytest.mark.parametrize(
    ("literal", "problem"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "Infinity"), ("1e999", "Infinity")],
)
async def test_non_finite_numbers_are_422_naming_the_feature(
    client: httpx.AsyncClient, literal: str, problem: str
) -> None:
    # Flow Duration declares no substitution rule (the rate features do: see
    # tests/protocols/test_substitution.py).
    values = ["0.5"] * 77
    values[0] = literal
    body = '{"features": [' + ",".join(values) + "]}"
    error = assert_envelope(
        await post_raw(client, "/v1/models/ids/predict", body), 422, "validation_error"
    )
    assert error["details"][0]["field"] == "features[0]"
    assert problem in error["details"][0]["message"]
    assert "Flow Duration" in error["details"][0]["message"]


async def test_non_finite_in_named_feature_names_it(client: httpx.AsyncClient) -> None:
    body = (
        '{"features": {"temperature": NaN, "vibration": 1, "pressure": 1, '
        '"flow_rate": 1, "current": 1}}'
    )
    error = assert_envelope(
        await post_raw(client, "/v1/models/iot/predict", body), 422, "validation_error"
    )
    assert error["details"][0]["field"] == "features.temperature"


async def test_huge_but_finite_numbers_reach_a_float64_model(client: httpx.AsyncClient) -> None:
    # ids takes float64 input; 1e300 is representable there and accepted (a float32 model
    # refuses it: see tests/registry/test_runtimes.py).
    values = list(GOOD)
    values[0] = 1e300
    response = await client.post("/v1/models/ids/predict", json={"features": values})
    assert response.status_code == 200


@pytest.mark.parametrize(
    ("value", "kind"), [("12", "string"), (None, "null"), (True, "boolean"), ([1], "array")]
)
async def test_non_numbers_are_422(client: httpx.AsyncClient, value: Any, kind: str) -> None:
    values: list[Any] = list(GOOD)
    values[5] = value
    response = await client.post("/v1/models/ids/predict", json={"features": values})
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == "features[5]"
    assert kind in error["details"][0]["message"]


@pytest.mark.parametrize("count", [0, 76, 78])
async def test_wrong_feature_count(client: httpx.AsyncClient, count: int) -> None:
    response = await client.post("/v1/models/ids/predict", json={"features": [0.1] * count})
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0] == {
        "field": "features",
        "message": f"expected 77 features, got {count}",
        "expected": 77,
        "got": count,
    }


async def test_features_missing_or_wrong_type(client: httpx.AsyncClient) -> None:
    error = assert_envelope(
        await client.post("/v1/models/ids/predict", json={"feature": GOOD}), 422, "validation_error"
    )
    assert error["details"][0]["field"] == "features"
    error = assert_envelope(
        await client.post("/v1/models/ids/predict", json={"features": "1,2,3"}),
        422,
        "validation_error",
    )
    assert error["details"][0]["field"] == "features"
    error = assert_envelope(
        await client.post("/v1/models/ids/predict", json={"features": GOOD, "version": 1}),
        422,
        "validation_error",
    )
    assert error["details"][0]["field"] == "version"


async def test_body_must_be_an_object(client: httpx.AsyncClient) -> None:
    error = assert_envelope(
        await client.post("/v1/models/ids/predict", json=[GOOD]), 422, "validation_error"
    )
    assert "object" in error["message"]


async def test_empty_and_oversized_batches(app_factory: Any) -> None:
    async with app_factory(models={"max_batch_rows": 10}) as (_, client):
        error = assert_envelope(
            await client.post("/v1/models/ids/predict/batch", json={"instances": []}),
            422,
            "validation_error",
        )
        assert error["details"][0]["field"] == "instances"
        error = assert_envelope(
            await client.post("/v1/models/ids/predict/batch", json={"instances": [GOOD] * 11}),
            422,
            "validation_error",
        )
        assert error["details"][0] == {
            "field": "instances",
            "message": "too many instances",
            "max": 10,
            "got": 11,
        }
        response = await client.post("/predict/batch", json=[{"features": GOOD}] * 11)
        assert_envelope(response, 422, "validation_error")
        response = await client.post(
            "/v1/models/ids/predict/batch", json={"instances": [GOOD] * 10}
        )
        assert response.status_code == 200


async def test_batch_errors_name_the_instance(client: httpx.AsyncClient) -> None:
    bad = list(GOOD)
    bad[3] = "x"
    response = await client.post(
        "/v1/models/ids/predict/batch", json={"instances": [GOOD, GOOD, bad, [1.0]]}
    )
    error = assert_envelope(response, 422, "validation_error")
    fields = [d["field"] for d in error["details"]]
    assert fields == ["instances[2][3]", "instances[3]"]


async def test_malformed_json_is_400(client: httpx.AsyncClient) -> None:
    error = assert_envelope(
        await post_raw(client, "/v1/models/ids/predict", '{"features": [1, 2'), 400, "invalid_json"
    )
    assert "not valid JSON" in error["message"]
    assert_envelope(await post_raw(client, "/v1/models/ids/predict", ""), 400, "invalid_json")


async def test_wrong_content_type_is_415(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/ids/predict",
        content="features=1",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    error = assert_envelope(response, 415, "unsupported_media_type")
    assert error["details"]["supported"] == ["application/json"]


async def test_body_too_large_is_413(app_factory: Any) -> None:
    async with app_factory(server={"max_body_bytes": 2048}) as (_, client):
        big = {"instances": [GOOD] * 20}
        error = assert_envelope(
            await client.post("/v1/models/ids/predict/batch", json=big), 413, "payload_too_large"
        )
        assert error["details"]["limit_bytes"] == 2048

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        # A chunked upload carries no Content-Length: the limit applies while reading.
        response = await client.post(
            "/v1/models/ids/predict",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert_envelope(response, 413, "payload_too_large")


async def test_method_not_allowed_and_unknown_route(client: httpx.AsyncClient) -> None:
    assert_envelope(await client.get("/v1/models/ids/predict"), 405, "method_not_allowed")
    assert_envelope(await client.delete("/predict"), 405, "method_not_allowed")
    # (/v2 is the Open Inference Protocol now, whose errors have its own shape.)
    error = assert_envelope(await client.get("/v3/nothing"), 404, "not_found")
    assert "/v3/nothing" in error["message"]
    oip = await client.get("/v2/nothing")
    assert oip.status_code == 404 and "/v2/nothing" in oip.json()["error"]


async def test_query_parameter_errors_use_the_envelope() -> None:
    async with running_app(make_settings(), as_admin=True) as (_, client):
        response = await client.get("/v1/admin/users", params={"limit": "many"})
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == "query.limit"


async def test_repeated_query_parameter_is_not_a_500(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/ids/predict", json={"features": GOOD}, params={"version": ["1", "2"]}
    )
    # The last value wins for a scalar query parameter.
    assert response.status_code == 200
    assert response.json()["model_version"] == "2"


async def test_request_id_is_echoed_when_valid(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers={"X-Request-ID": "abc-123.XY"})
    assert response.headers["x-request-id"] == "abc-123.XY"
    response = await client.post(
        "/v1/models/ids/predict", json={"features": GOOD}, headers={"X-Request-ID": "trace-7"}
    )
    assert response.json()["request_id"] == "trace-7"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", ""])
async def test_invalid_request_id_is_replaced(client: httpx.AsyncClient, bad: str) -> None:
    response = await client.get("/health/live", headers={"X-Request-ID": bad})
    assert response.headers["x-request-id"] != bad
    generated = response.headers["x-request-id"]
    assert len(generated) == 32
    assert uuid.UUID(hex=generated).version == 4 and uuid.UUID(hex=generated).hex == generated
