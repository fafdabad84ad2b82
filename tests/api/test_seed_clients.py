"""The seed clients' requests, sent as they send them, get what they read back."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import FIXTURES

SEEDS = FIXTURES / "seeds"

# Fields each client reads from each response.
RLIDS_RESULT_FIELDS = {
    "predicted_class": int,
    "predicted_class_name": str,
    "confidence": float,
    "is_attack": bool,
    "processing_time_ms": float,
    "model_version": str,
    "probabilities": list,
}


def load(name: str) -> Any:
    return json.loads((SEEDS / name).read_text())


def assert_rlids_result(result: dict[str, Any]) -> None:
    for field, kind in RLIDS_RESULT_FIELDS.items():
        assert isinstance(result[field], kind), field
    assert 0.0 <= result["confidence"] <= 1.0
    assert len(result["probabilities"]) == 7
    assert sum(result["probabilities"]) == pytest.approx(1.0)
    assert result["confidence"] == pytest.approx(max(result["probabilities"]))
    assert result["is_attack"] == (result["predicted_class_name"] != "BENIGN")


async def test_rlids_health_and_model_info(client: httpx.AsyncClient) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "healthy"
    info = await client.get("/model/info")
    assert info.status_code == 200
    body = info.json()
    assert body["model_name"] == "ids"
    assert isinstance(body["model_version"], str)
    assert body["input_features"] == 77
    assert "BENIGN" in body["class_names"]


async def test_rlids_predict(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json=load("rlids_predict.json"))
    assert response.status_code == 200, response.text
    assert_rlids_result(response.json())


async def test_rlids_predict_batch_returns_a_list(client: httpx.AsyncClient) -> None:
    body = load("rlids_predict_batch.json")
    response = await client.post("/predict/batch", json=body)
    assert response.status_code == 200, response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == len(body)
    for result in results:
        assert_rlids_result(result)


async def test_iot_health_lists_models(client: httpx.AsyncClient) -> None:
    health = (await client.get("/health")).json()
    assert health["status"] == "healthy"
    assert {"iot", "iot-isolation-forest", "iot-lof", "iot-autoencoder"} <= set(
        health["models_loaded"]
    )


@pytest.mark.parametrize("detector", ["isolation_forest", "lof", "autoencoder"])
async def test_iot_predict_each_detector(client: httpx.AsyncClient, detector: str) -> None:
    body = load("iot_predict.json") | {"model_name": detector}
    response = await client.post("/predict", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert isinstance(result["is_anomaly"], bool)
    assert isinstance(result["anomaly_score"], float)
    assert 0.5 <= result["confidence"] <= 1.0
    assert result["model_used"] == detector
    assert isinstance(result["timestamp"], str)
    assert isinstance(result["explanation"], str) and result["explanation"]
    # Fields the model does not use are accepted and reported, not an error.
    assert result["ignored_features"] == ["duty_cycle", "operational_state"]


async def test_iot_seed_reading_is_far_from_the_pump_and_says_which_sensors(
    client: httpx.AsyncClient,
) -> None:
    # The README's values are nothing like SKAB's pump (vibration 2.8 g vs ~0.2 g there).
    result = (await client.post("/predict", json=load("iot_predict.json"))).json()
    assert result["is_anomaly"] is True
    assert "vibration" in result["explanation"]
    assert "σ" in result["explanation"]


async def test_iot_batch(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict/batch", json=load("iot_predict_batch.json"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["total_samples"] == 2
    assert [p["index"] for p in body["predictions"]] == [0, 1]
    for p in body["predictions"]:
        assert isinstance(p["is_anomaly"], bool)
        assert isinstance(p["anomaly_score"], float)
        assert isinstance(p["timestamp"], str)
    assert body["anomalies_detected"] == sum(p["is_anomaly"] for p in body["predictions"])
    assert body["anomaly_rate"] == body["anomalies_detected"] / 2


async def test_iot_models_and_info(client: httpx.AsyncClient) -> None:
    models = (await client.get("/models")).json()
    assert models["available_models"] == ["autoencoder", "isolation_forest", "lof"]
    info = await client.get("/info")
    assert info.status_code == 200
    assert info.json()["name"] == "mlgate"


async def test_iot_unknown_model_name_is_404_naming_choices(client: httpx.AsyncClient) -> None:
    body = load("iot_predict.json") | {"model_name": "prophet"}
    response = await client.post("/predict", json=body)
    assert response.status_code == 404
    error = response.json()["error"]
    assert error["code"] == "model_not_found"
    assert error["details"]["available"] == ["autoencoder", "isolation_forest", "lof"]


async def test_iot_missing_sensor_is_422_naming_it(client: httpx.AsyncClient) -> None:
    body = load("iot_predict.json")
    del body["sensor_data"]["pressure"]
    response = await client.post("/predict", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert "pressure" in error["message"]
    assert error["details"][0]["missing"] == ["pressure"]


async def test_unrecognised_legacy_body_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post("/predict", json={"rows": [1, 2]})
    assert response.status_code == 422
    assert "features" in response.json()["error"]["message"]
    response = await client.post("/predict/batch", json={"rows": [1, 2]})
    assert response.status_code == 422


async def test_legacy_batch_item_without_features_is_named(client: httpx.AsyncClient) -> None:
    body = load("rlids_predict_batch.json")[:3]
    body[1] = {"feature": [0.1] * 77}
    response = await client.post("/predict/batch", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "[1]"
    body[1] = {"features": [0.1] * 76}
    response = await client.post("/predict/batch", json=body)
    assert response.json()["error"]["details"][0]["field"] == "[1].features"
