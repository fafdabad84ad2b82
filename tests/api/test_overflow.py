"""Numbers no double can hold (a 400-digit integer, 1e400): a 422 naming the field on
every route that takes numbers, never a 500 (they used to overflow in numpy)."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_errors import assert_envelope, post_raw
from tests.conftest import make_settings, running_app

HUGE_INT = "1" + "0" * 400
HUGE_EXP = "1e400"
LONG_INT = "9" * 5000  # more digits than Python's int() accepts by default
ROW = ",".join(["0.5"] * 76)
READING_TAIL = '"vibration": 0.2, "pressure": 0.05, "flow_rate": 125.7, "current": 2.5'


@pytest.mark.parametrize("number", [HUGE_INT, HUGE_EXP, "-" + HUGE_INT, LONG_INT])
@pytest.mark.parametrize(
    ("path", "template", "field"),
    [
        ("/v1/models/ids/predict", '{"features": [N, ' + ROW + "]}", "features[0]"),
        (
            "/v1/models/ids/predict/batch",
            '{"instances": [[0.5, ' + ROW + "], [N, " + ROW + "]]}",
            "instances[1][0]",
        ),
        ("/predict", '{"features": [N, ' + ROW + "]}", "features[0]"),
        ("/predict/batch", '[{"features": [N, ' + ROW + "]}]", "[0].features[0]"),
        (
            "/predict",
            '{"sensor_data": {"temperature": N, ' + READING_TAIL + "}}",
            "sensor_data.temperature",
        ),
        (
            "/v1/models/iot/predict",
            '{"features": {"temperature": N, ' + READING_TAIL + "}}",
            "features.temperature",
        ),
    ],
)
async def test_out_of_range_numbers_are_422_naming_the_field(
    client: httpx.AsyncClient, path: str, template: str, field: str, number: str
) -> None:
    response = await post_raw(client, path, template.replace("N", number))
    error = assert_envelope(response, 422, "validation_error")
    assert error["details"][0]["field"] == field
    assert "beyond the model's numeric range" in error["details"][0]["message"]
    assert len(response.content) < 2000  # the number is quoted, not echoed whole


@pytest.mark.parametrize("number", [HUGE_INT, HUGE_EXP, LONG_INT])
async def test_baseline_uploads_refuse_them_too(number: str) -> None:
    async with running_app(make_settings(), as_admin=True) as (_, client):
        mean = (
            '{"baseline": {"temperature": {"mean": N, "std": 1}, '
            '"vibration": {"mean": 1, "std": 1}, "pressure": {"mean": 1, "std": 1}, '
            '"flow_rate": {"mean": 1, "std": 1}, "current": {"mean": 1, "std": 1}}}'
        ).replace("N", number)
        response = await post_raw_put(client, "/v1/models/iot/devices/d-1/baseline", mean)
        error = assert_envelope(response, 422, "validation_error")
        assert error["details"][0]["field"] == "baseline.temperature.mean"
        readings = (
            '{"readings": [{"temperature": 1, ' + READING_TAIL + "}, "
            '{"temperature": N, ' + READING_TAIL + "}]}"
        ).replace("N", number)
        response = await post_raw_put(client, "/v1/models/iot/devices/d-1/baseline", readings)
        error = assert_envelope(response, 422, "validation_error")
        assert error["details"][0]["field"] == "readings[1].temperature"


async def post_raw_put(client: httpx.AsyncClient, path: str, body: str) -> httpx.Response:
    return await client.put(path, content=body, headers={"content-type": "application/json"})
