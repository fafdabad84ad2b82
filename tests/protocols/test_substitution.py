"""Raw flow-meter output: the manifest's rules for missing and non-finite values.

CICFlowMeter writes ``Infinity`` in Flow Bytes/s and Flow Packets/s of zero-duration
flows and leaves 0/0 cells empty; training replaced them (NaN/empty -> 0, ±Infinity ->
-1) and the `ids` manifests declare that rule for those two features. The server applies
exactly that rule and says which cells it replaced; other features still refuse them.
"""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np

from tests.api.test_errors import assert_envelope, post_raw

BYTES_S, PACKETS_S = 13, 14


def row_literals(**cells: str) -> list[str]:
    values = ["0.5"] * 77
    for index, literal in cells.items():
        values[int(index.removeprefix("c"))] = literal
    return values


def body(values: list[str]) -> str:
    return '{"features": [' + ",".join(values) + "]}"


async def probabilities(client: httpx.AsyncClient, raw: str) -> list[float]:
    response = await post_raw(client, "/v1/models/ids/predict", raw)
    assert response.status_code == 200, response.text
    return list(response.json()["probabilities"].values())


async def test_infinity_and_nan_on_rate_features_are_replaced_as_training_did(
    client: httpx.AsyncClient,
) -> None:
    raw = body(row_literals(c13="Infinity", c14="NaN"))
    response = await post_raw(client, "/v1/models/ids/predict", raw)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["substituted"] == [
        {
            "field": "features[13]",
            "feature": "Flow Bytes/s",
            "value": "Infinity",
            "replaced_by": -1.0,
        },
        {"field": "features[14]", "feature": "Flow Packets/s", "value": "NaN", "replaced_by": 0.0},
    ]
    # Exactly as if the client had sent the replacements itself.
    explicit = await probabilities(client, body(row_literals(c13="-1", c14="0")))
    assert list(result["probabilities"].values()) == explicit


async def test_null_and_minus_infinity_by_name_and_in_batches(client: httpx.AsyncClient) -> None:
    names = (await client.get("/v1/models/ids")).json()["schema"]["features"]
    named: dict[str, Any] = {f["name"]: 0.5 for f in names}
    named["Flow Bytes/s"] = None
    response = await client.post(
        "/v1/models/ids/predict/batch",
        content='{"instances": ['
        + body(row_literals(c14="-Infinity"))[13:-1]
        + ", "
        + _json(named)
        + "]}",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["substituted"] == [
        {
            "field": "instances[0][14]",
            "feature": "Flow Packets/s",
            "value": "-Infinity",
            "replaced_by": -1.0,
        },
        {
            "field": "instances[1].Flow Bytes/s",
            "feature": "Flow Bytes/s",
            "value": "null",
            "replaced_by": 0.0,
        },
    ]


async def test_clean_rows_report_nothing(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/ids/predict", json={"features": [0.5] * 77})
    assert response.json()["substituted"] == []


async def test_features_without_a_rule_still_refuse(client: httpx.AsyncClient) -> None:
    for literal in ("Infinity", "NaN", "null"):
        raw = body(row_literals(c2=literal))
        error = assert_envelope(
            await post_raw(client, "/v1/models/ids/predict", raw), 422, "validation_error"
        )
        assert error["details"][0]["field"] == "features[2]"
        assert "Total Backward Packets" in error["details"][0]["message"]
    # The IoT models declare no rule at all.
    error = assert_envelope(
        await post_raw(
            client,
            "/v1/models/iot/predict",
            '{"features": [NaN, 0.2, 0.05, 125.7, 2.5]}',
        ),
        422,
        "validation_error",
    )
    assert error["details"][0]["field"] == "features[0]"


async def test_seed_rlids_client_gets_the_substitution_per_flow(
    client: httpx.AsyncClient,
) -> None:
    flows = "[" + ", ".join([body(row_literals()), body(row_literals(c13="Infinity"))]) + "]"
    response = await post_raw(client, "/predict/batch", flows)
    assert response.status_code == 200, response.text
    first, second = response.json()
    assert "substituted" not in first
    assert second["substituted"][0]["field"] == "[1].features[13]"
    single = await post_raw(client, "/predict", body(row_literals(c14="NaN")))
    assert single.json()["substituted"][0]["feature"] == "Flow Packets/s"


async def test_the_manifest_declares_the_rule(client: httpx.AsyncClient) -> None:
    features = (await client.get("/v1/models/ids")).json()["schema"]["features"]
    rules = {f["name"]: (f.get("missing_value"), f.get("infinite_value")) for f in features}
    assert rules["Flow Bytes/s"] == rules["Flow Packets/s"] == (0.0, -1.0)
    assert rules["Flow Duration"] == (None, None)
    assert np.isfinite([v for pair in rules.values() for v in pair if v is not None]).all()


def _json(value: Any) -> str:
    import orjson

    return orjson.dumps(value).decode()
