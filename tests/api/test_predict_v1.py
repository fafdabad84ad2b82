"""v1 prediction: single and batch, positional and named, versions, summaries."""

from __future__ import annotations

import csv
import math
from typing import Any

import httpx
import pytest

from tests.conftest import DATA_DIR

IDS_CSV = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"


def real_flows(per_class: int = 3) -> tuple[list[str], list[tuple[str, list[float]]]]:
    """A few finite rows of every class from the project's copy of CICIDS2017."""
    with IDS_CSV.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        taken: dict[str, int] = {}
        rows = []
        for record in reader:
            label = record[-1]
            try:
                values = [float(v) for v in record[:-1]]
            except ValueError:
                continue
            if not all(math.isfinite(v) for v in values) or taken.get(label, 0) >= per_class:
                continue
            taken[label] = taken.get(label, 0) + 1
            rows.append((label, values))
    return header[:-1], rows


async def test_single_positional_has_every_field(client: httpx.AsyncClient) -> None:
    _, rows = real_flows(1)
    response = await client.post("/v1/models/ids/predict", json={"features": rows[0][1]})
    assert response.status_code == 200, response.text
    body = response.json()
    for field in (
        "predicted_class",
        "predicted_class_name",
        "confidence",
        "probabilities",
        "is_attack",
        "model",
        "model_version",
        "processing_time_ms",
        "request_id",
        "timestamp",
    ):
        assert field in body, field
    assert body["model"] == "ids"
    assert set(body["probabilities"]) == {
        "BENIGN",
        "Bot",
        "BruteForce",
        "DoS",
        "Infiltration",
        "PortScan",
        "WebAttack",
    }
    assert sum(body["probabilities"].values()) == pytest.approx(1.0)
    assert body["request_id"] == response.headers["x-request-id"]


async def test_real_flows_are_mostly_classified_right(client: httpx.AsyncClient) -> None:
    _, rows = real_flows(5)
    response = await client.post(
        "/v1/models/ids/predict/batch", json={"instances": [values for _, values in rows]}
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    correct = sum(
        p["predicted_class_name"] == label for (label, _), p in zip(rows, predictions, strict=True)
    )
    # These rows may be training rows; the held-out metrics live in the manifest.
    assert correct / len(rows) >= 0.9


async def test_named_features_give_the_same_answer_as_positional(
    client: httpx.AsyncClient,
) -> None:
    names, rows = real_flows(1)
    values = rows[2][1]
    positional = (await client.post("/v1/models/ids/predict", json={"features": values})).json()
    named = (
        await client.post(
            "/v1/models/ids/predict", json={"features": dict(zip(names, values, strict=True))}
        )
    ).json()
    assert named["probabilities"] == positional["probabilities"]


async def test_aliases_and_unused_fields(client: httpx.AsyncClient) -> None:
    body = {
        "features": {
            "Temperature": 71.0,
            "vibration": 0.21,
            "pressure": 0.25,
            "flow_rate": 32.0,
            "current": 1.0,
            "duty_cycle": 0.7,
            "site": "north",
        }
    }
    response = await client.post("/v1/models/iot/predict", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["ignored_features"] == ["duty_cycle", "site"]
    for field in ("is_anomaly", "anomaly_score", "confidence", "explanation", "deviations"):
        assert field in result
    assert len(result["deviations"]) == 3


async def test_batch_summary_counts(client: httpx.AsyncClient) -> None:
    _, rows = real_flows(2)
    instances = [values for _, values in rows]
    response = await client.post("/v1/models/ids/predict/batch", json={"instances": instances})
    body = response.json()
    summary = body["summary"]
    assert summary["total"] == len(instances) == len(body["predictions"])
    assert sum(summary["class_counts"].values()) == len(instances)
    attacks = sum(p["is_attack"] for p in body["predictions"])
    assert summary["attacks"] == attacks
    assert summary["attack_rate"] == pytest.approx(attacks / len(instances))


async def test_anomaly_batch_summary(client: httpx.AsyncClient) -> None:
    normal = [71.0, 0.21, 0.25, 32.0, 1.0]
    odd = [120.0, 3.0, 9.0, 1.0, 50.0]
    response = await client.post("/v1/models/iot/predict/batch", json={"instances": [normal, odd]})
    body = response.json()
    assert body["summary"]["total"] == 2
    assert body["predictions"][1]["is_anomaly"] is True
    assert body["summary"]["anomalies"] == sum(p["is_anomaly"] for p in body["predictions"])


@pytest.mark.parametrize("where", ["query", "body"])
async def test_version_and_alias_selection(client: httpx.AsyncClient, where: str) -> None:
    _, rows = real_flows(1)
    for ref, expected in (("1", "1"), ("2", "2"), ("4", "4"), ("latest", "4"), ("stable", "3")):
        payload: dict[str, Any] = {"features": rows[0][1]}
        params = {}
        if where == "query":
            params["version"] = ref
        else:
            payload["version"] = ref
        response = await client.post("/v1/models/ids/predict", json=payload, params=params)
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == expected


async def test_unknown_version_is_404_listing_versions(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/models/ids/predict", json={"features": [0.0] * 77}, params={"version": "99"}
    )
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "version_not_found"
    assert error["details"]["available_versions"] == ["1", "2", "3", "4"]


async def test_unknown_model_is_404(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/models/nope/predict", json={"features": [1.0]})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found"
    assert "ids" in response.json()["error"]["details"]["available"]
