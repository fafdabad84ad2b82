"""The ``explain`` request option: per-row top features with signed contributions, on v1
and /v2, for the classifier versions that ship an explainer."""

from __future__ import annotations

import httpx
import numpy as np
import orjson
import pytest

from mlgate.explain import explain
from mlgate.registry.manifest import load_manifest
from mlgate.settings import bundled_repository
from tests.api.test_oip import parse_binary_response

URL = "/v1/models/ids/predict"


def flows(n: int, seed: int = 0) -> list[list[float]]:
    return np.abs(np.random.default_rng(seed).normal(200, 150, size=(n, 77))).tolist()


@pytest.mark.parametrize(("version", "method"), [("3", "tree_shap"), ("4", "integrated_gradients")])
async def test_explanations_match_the_library_and_add_up(
    client: httpx.AsyncClient, version: str, method: str
) -> None:
    rows = flows(3, seed=int(version))
    response = await client.post(
        URL + "/batch", json={"instances": rows, "version": version, "explain": 4}
    )
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    expected = explain(bundled_repository() / "ids" / version, np.array(rows), 4)
    for p, want in zip(predictions, expected, strict=True):
        got = p["explanation"]
        assert got["method"] == method
        assert got["explained_class"] == got["predicted_class"] == p["predicted_class_name"]
        assert len(got["top"]) == 4
        magnitudes = [abs(c["contribution"]) for c in got["top"]]
        assert magnitudes == sorted(magnitudes, reverse=True)
        assert got == want.as_dict()
        # The full contributions plus the base value give the explained output.
        assert want.base_value + want.contributions.sum() == pytest.approx(want.output, abs=1e-6)


async def test_explain_true_lists_five_and_false_lists_none(client: httpx.AsyncClient) -> None:
    (row,) = flows(1)
    five = await client.post(URL, json={"features": row, "explain": True})
    assert five.status_code == 200, five.text
    assert len(five.json()["explanation"]["top"]) == 5
    none = await client.post(URL, json={"features": row, "explain": False})
    assert "explanation" not in none.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"features": flows(1)[0], "version": "1", "explain": True}, "no explainer"),
        ({"features": flows(1)[0], "explain": "yes"}, "true, false or a number"),
        ({"features": flows(1)[0], "explain": 0}, "true, false or a number"),
        ({"features": flows(1)[0], "explain": 500}, "true, false or a number"),
    ],
)
async def test_bad_explain_requests_are_422(
    client: httpx.AsyncClient, body: dict[str, object], message: str
) -> None:
    response = await client.post(URL, json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["details"][0]["field"] == "explain"
    assert message in error["message"]


async def test_explain_is_for_classifiers_and_bounded(client: httpx.AsyncClient) -> None:
    reading = {
        "temperature": 89.4,
        "vibration": 0.2,
        "pressure": 0.05,
        "flow_rate": 125.7,
        "current": 2.5,
    }
    iot = await client.post("/v1/models/iot/predict", json={"features": reading, "explain": 3})
    assert iot.status_code == 422 and "classifiers" in iot.json()["error"]["message"]
    many = await client.post(URL + "/batch", json={"instances": flows(101), "explain": True})
    assert many.status_code == 422 and "at most 100 rows" in many.json()["error"]["message"]


async def test_oip_explain_parameter_adds_an_explanation_output(
    client: httpx.AsyncClient,
) -> None:
    rows = flows(2, seed=5)
    response = await client.post(
        "/v2/models/ids/versions/3/infer",
        json={
            "inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": rows}],
            "parameters": {"explain": 2, "binary_data_output": True},
        },
    )
    assert response.status_code == 200, response.text
    out = parse_binary_response(response)
    explained = [orjson.loads(e) for e in out["explanation"].tolist()]
    assert [len(e["top"]) for e in explained] == [2, 2]
    assert [e["explained_class"] for e in explained] == out["predicted_class_name"].tolist()
    manifest = load_manifest(bundled_repository() / "ids" / "3")
    assert manifest.explainer is not None and manifest.explainer.kind == "tree_shap"
