"""Model listing and model information."""

from __future__ import annotations

import httpx


async def test_list_models(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["default_model"] == "ids"
    names = [m["name"] for m in body["models"]]
    assert names == sorted(names)
    assert {"ids", "iot", "iot-isolation-forest", "iot-lof", "iot-autoencoder"} <= set(names)
    ids = next(m for m in body["models"] if m["name"] == "ids")
    assert ids["task"] == "classification"
    # Versions 1 and 3: gradient-boosted trees (3 is stable); 2 and 4: the DQN agent.
    assert ids["aliases"] == {"latest": "4", "stable": "3"}
    assert ids["versions"] == ["1", "2", "3", "4"]
    assert ids["n_features"] == 77


async def test_model_info_has_schema_classes_and_metrics(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models/ids")).json()
    assert body["default_version"] == "3"
    schema = body["schema"]
    assert len(schema["features"]) == 77
    assert schema["features"][0]["name"] == "Flow Duration"
    assert "BENIGN" not in schema["attack_classes"]
    assert set(schema["attack_classes"]) | {"BENIGN"} == set(schema["classes"])
    metrics = body["metrics"]
    assert 0.0 < metrics["macro_f1"] <= 1.0
    version = body["versions"][0]
    assert version["provenance"]
    assert version["single_row_latency_us"] > 0


async def test_anomaly_model_info_has_threshold(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models/iot")).json()
    assert body["task"] == "anomaly"
    assert isinstance(body["schema"]["threshold"], float)
    assert [f["name"] for f in body["schema"]["features"]] == [
        "temperature",
        "vibration",
        "pressure",
        "flow_rate",
        "current",
    ]


async def test_version_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/models/ids/versions/stable")
    assert response.status_code == 200
    assert response.json()["version"] == "3"
    assert (await client.get("/v1/models/ids/versions/7")).status_code == 404
    assert (await client.get("/v1/models/none")).status_code == 404
