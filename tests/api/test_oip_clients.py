"""Real Open Inference Protocol clients against a real `mlgate serve`: Triton's
`tritonclient.http` (sync and aio) and KServe's `InferenceRESTClient`, with binary
tensors (their default) and JSON, on `ids` and `iot`, giving the same answers as /v1."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.cli.test_serve_process import KEY_PATTERN
from tests.conftest import PROJECT_ROOT
from tests.servers import clean_env, mlgate_serve

httpclient = pytest.importorskip("tritonclient.http")
aioclient = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402

pytestmark = pytest.mark.slow

IOT = np.array(
    [[89.4, 0.21, 0.05, 125.7, 2.5], [95.0, 2.8, 6.5, 152.0, 87.5], [90.1, 0.2, 0.04, 124.0, 2.4]]
)


@dataclass(frozen=True)
class Server:
    url: str
    host: str
    key: str

    @property
    def headers(self) -> dict[str, str]:
        """A fresh dict per call: tritonclient adds its own headers to the dict it is given."""
        return {"X-API-Key": self.key}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workdir = tmp_path_factory.mktemp("oip")
    with mlgate_serve(workdir, clean_env()) as running:
        (key,) = KEY_PATTERN.findall(running.log.read_text())
        yield Server(running.url, running.url.removeprefix("http://"), key)


def ids_rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    rows = np.abs(rng.normal(1000.0, 800.0, size=(6, 77)))
    rows[0] = [
        54,
        1,
        1,
        0,
        6,
        0,
        0,
        0,
        0,
        6,
        6,
        6,
        0,
        111111.1111,
        37037.037,
        54,
        0,
        54,
        54,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        40,
        20,
        18518.5185,
        18518.5185,
        0,
        6,
        2,
        3.4641,
        12,
        0,
        0,
        0,
        1,
        0,
        0,
        0,
        0,
        1,
        3,
        0,
        6,
        40,
        0,
        0,
        0,
        0,
        0,
        0,
        1,
        0,
        1,
        6,
        29200,
        0,
        0,
        40,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ]
    return rows


def v1_batch(
    server: Server, model: str, rows: np.ndarray, version: str = ""
) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{server.url}/v1/models/{model}/predict/batch",
        params={"version": version} if version else None,
        json={"instances": rows.tolist()},
        headers=server.headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    predictions: list[dict[str, Any]] = response.json()["predictions"]
    return predictions


def matrix_input(rows: np.ndarray, binary: bool, datatype: str = "FP64") -> object:
    tensor = httpclient.InferInput("input", list(rows.shape), datatype)
    dtype = np.float64 if datatype == "FP64" else np.float32
    tensor.set_data_from_numpy(rows.astype(dtype), binary_data=binary)
    return tensor


def test_health_and_metadata(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.host)
    assert client.is_server_live()
    assert client.is_server_ready()
    meta = client.get_server_metadata(headers=server.headers)
    assert meta["name"] == "mlgate" and "binary_tensor_data" in meta["extensions"]
    model = client.get_model_metadata("ids", headers=server.headers)
    assert model["inputs"][0]["shape"] == [-1, 77]
    assert client.is_model_ready("iot", headers=server.headers)
    assert client.is_model_ready("ids", "2", headers=server.headers)
    assert not client.is_model_ready("nope", headers=server.headers)
    client.close()


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
@pytest.mark.parametrize("version", ["", "2"])
def test_ids_classes_and_probabilities_equal_v1(server: Server, binary: bool, version: str) -> None:
    rows = ids_rows()
    client = httpclient.InferenceServerClient(server.host)
    outputs = (
        None
        if binary
        else [
            httpclient.InferRequestedOutput(name, binary_data=False)
            for name in ("probabilities", "predicted_class_name", "is_attack")
        ]
    )
    result = client.infer(
        "ids",
        [matrix_input(rows, binary)],
        model_version=version,
        outputs=outputs,
        headers=server.headers,
    )
    client.close()
    expected = v1_batch(server, "ids", rows, version)
    names = result.as_numpy("predicted_class_name").tolist()
    names = [n.decode() if isinstance(n, bytes) else n for n in names]
    assert names == [p["predicted_class_name"] for p in expected]
    assert names[0] == "PortScan"
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (6, 7)
    np.testing.assert_allclose(
        probabilities,
        [list(p["probabilities"].values()) for p in expected],
        rtol=1e-12,
    )
    assert result.as_numpy("is_attack").tolist() == [p["is_attack"] for p in expected]
    assert result.get_response()["model_version"] == (version or "3")  # stable


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_iot_per_feature_tensors_equal_v1(server: Server, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.host)
    inputs = []
    for j, name in enumerate(["temperature", "vibration", "pressure", "flow_rate", "current"]):
        tensor = httpclient.InferInput(name, [len(IOT), 1], "FP64")
        tensor.set_data_from_numpy(IOT[:, j : j + 1].copy(), binary_data=binary)
        inputs.append(tensor)
    outputs = [
        httpclient.InferRequestedOutput(name, binary_data=binary)
        for name in ("anomaly_score", "is_anomaly", "explanation")
    ]
    result = client.infer("iot", inputs, outputs=outputs, headers=server.headers)
    client.close()
    expected = v1_batch(server, "iot", IOT)
    assert result.as_numpy("is_anomaly").tolist() == [p["is_anomaly"] for p in expected]
    assert result.as_numpy("is_anomaly").tolist() == [False, True, False]
    np.testing.assert_allclose(
        result.as_numpy("anomaly_score"), [p["anomaly_score"] for p in expected], rtol=1e-12
    )
    explanations = [
        e.decode() if isinstance(e, bytes) else e for e in result.as_numpy("explanation").tolist()
    ]
    assert explanations == [p["explanation"] for p in expected]


async def test_the_aio_client_gives_the_same_answers(server: Server) -> None:
    rows = ids_rows()
    client = aioclient.InferenceServerClient(server.host)
    try:
        assert await client.is_server_ready()
        tensor = aioclient.InferInput("input", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows.astype(np.float32))
        result = await client.infer("ids", [tensor], headers=server.headers)
        iot = aioclient.InferInput("input", list(IOT.shape), "FP64")
        iot.set_data_from_numpy(IOT, binary_data=False)
        iot_result = await client.infer(
            "iot",
            [iot],
            outputs=[aioclient.InferRequestedOutput("is_anomaly", binary_data=False)],
            headers=server.headers,
        )
    finally:
        await client.close()
    expected = v1_batch(server, "ids", rows.astype(np.float32).astype(np.float64))
    names = [n.decode() for n in result.as_numpy("predicted_class_name").tolist()]
    assert names == [p["predicted_class_name"] for p in expected]
    assert iot_result.as_numpy("is_anomaly").tolist() == [False, True, False]


def test_errors_reach_the_client_as_4xx(server: Server) -> None:
    client = httpclient.InferenceServerClient(server.host)
    with pytest.raises(InferenceServerException) as info:
        client.infer("ids", [matrix_input(np.ones((2, 76)), True)], headers=server.headers)
    assert info.value.status() == "422"
    assert "expected [N, 77]" in info.value.message()
    bad = np.ones((1, 77))
    bad[0, 3] = np.nan
    with pytest.raises(InferenceServerException) as info:
        client.infer("ids", [matrix_input(bad, True)], headers=server.headers)
    assert info.value.status() == "422"
    with pytest.raises(InferenceServerException) as info:
        client.infer("ids", [matrix_input(np.ones((1, 77)), True)])
    assert info.value.status() == "401"
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [matrix_input(np.ones((1, 77)), True)], headers=server.headers)
    assert info.value.status() == "404"
    client.close()


def test_the_readme_example_runs_as_written(server: Server, tmp_path: Path) -> None:
    text = (PROJECT_ROOT / "README.md").read_text()
    (example,) = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "tritonclient" in b]
    script = tmp_path / "example.py"
    script.write_text(example.replace("127.0.0.1:8000", server.host))
    result = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "MLGATE_API_KEY": server.key},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "(2, 7)" in result.stdout


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
async def test_the_kserve_rest_client(server: Server, binary: bool) -> None:
    kserve = pytest.importorskip("kserve")
    rows = ids_rows()
    client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=30))
    tensor = kserve.InferInput("input", list(rows.shape), "FP64")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    request = kserve.InferRequest(
        model_name="ids",
        infer_inputs=[tensor],
        parameters={"binary_data_output": binary},
    )
    response = await client.infer(server.url, request, model_name="ids", headers=server.headers)
    await client._client.aclose()
    outputs = {o.name: o.as_numpy() for o in response.outputs}
    expected = v1_batch(server, "ids", rows)
    names = [n.decode() if isinstance(n, bytes) else n for n in outputs["predicted_class_name"]]
    assert names == [p["predicted_class_name"] for p in expected]
    np.testing.assert_allclose(
        outputs["probabilities"],
        [list(p["probabilities"].values()) for p in expected],
        rtol=1e-12,
    )


async def test_the_kserve_rest_client_on_the_v1_protocol(server: Server) -> None:
    """KServe's client with ``protocol="v1"`` (TensorFlow Serving's REST shape): liveness
    at ``/``, readiness at ``/v1/models/{m}``, ``POST /v1/models/{m}:predict`` with
    ``instances`` (the answer's ``predictions`` are /v1's) and ``:explain``."""
    kserve = pytest.importorskip("kserve")
    rows = ids_rows()
    client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v1", timeout=30))
    try:
        assert await client.is_server_live(server.url, headers=server.headers) is True
        ready = await client.is_model_ready(server.url, "ids", headers=server.headers)
        assert ready is True
        answer = await client.infer(
            server.url, {"instances": rows.tolist()}, model_name="ids", headers=server.headers
        )
        expected = v1_batch(server, "ids", rows)
        assert [p["predicted_class_name"] for p in answer["predictions"]] == [
            p["predicted_class_name"] for p in expected
        ]
        assert answer["model_version"] == "3"
        # A version by path, as TensorFlow Serving names one.
        async with httpx.AsyncClient() as plain:
            pinned = await plain.post(
                f"{server.url}/v1/models/ids/versions/4:predict",
                json={"instances": rows.tolist()},
                headers=server.headers,
            )
        assert pinned.status_code == 200, pinned.text
        assert pinned.json()["model_version"] == "4"
        # Its errors are /v1's: the client raises on them.
        with pytest.raises(httpx.HTTPStatusError) as refused:
            await client.infer(
                server.url, {"instances": [[1.0]]}, model_name="ids", headers=server.headers
            )
        assert refused.value.response.status_code == 422
        with pytest.raises(httpx.HTTPStatusError) as unknown:  # as from KServe's own server
            await client.is_model_ready(server.url, "nope", headers=server.headers)
        assert unknown.value.response.status_code == 404
        # Its explain: the same answers, each row with its top features (5 by default).
        explained = await client.explain(
            server.url, "ids", {"instances": rows[:2].tolist()}, headers=server.headers
        )
        for row, plain in zip(explained["predictions"], answer["predictions"], strict=False):
            assert row["predicted_class_name"] == plain["predicted_class_name"]
            assert len(row["explanation"]["top"]) == 5
            assert row["explanation"]["method"] == "tree_shap"
    finally:
        await client._client.aclose()
