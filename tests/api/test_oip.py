"""The Open Inference Protocol (/v2) in-process: metadata, health, JSON and binary
tensors, output selection, errors in the OIP shape, and the same answers as /v1."""

from __future__ import annotations

import gzip
import struct
import zlib
from typing import Any

import httpx
import numpy as np
import orjson
import pytest

from tests.conftest import create_admin_key, make_settings, running_app

HEADER = "Inference-Header-Content-Length"
ROW = [0.5] * 77
IOT_NAMES = ["temperature", "vibration", "pressure", "flow_rate", "current"]
READING = [89.4, 0.21, 0.05, 125.7, 2.5]
ONE_ROW = {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}]}


def flows(n: int = 4, seed: int = 0) -> np.ndarray:
    """Rows spread over the classes: the bundled CICIDS2017 sample's first flows."""
    rng = np.random.default_rng(seed)
    return np.abs(rng.normal(100.0, 50.0, size=(n, 77)))


def binary_request(
    inputs: list[tuple[str, np.ndarray, str]], **document: Any
) -> tuple[bytes, dict[str, str]]:
    """A request with binary inputs: (body, headers)."""
    tensors = []
    chunks = []
    for name, array, datatype in inputs:
        raw = array.tobytes()
        tensors.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": datatype,
                "parameters": {"binary_data_size": len(raw)},
            }
        )
        chunks.append(raw)
    header = orjson.dumps({"inputs": tensors, **document})
    return header + b"".join(chunks), {HEADER: str(len(header))}


def parse_binary_response(response: httpx.Response) -> dict[str, np.ndarray]:
    """Outputs of a binary (or JSON) response as arrays."""
    length = response.headers.get(HEADER.lower())
    body = response.content
    header = orjson.loads(body[: int(length)] if length else body)
    rest = body[int(length) :] if length else b""
    out: dict[str, np.ndarray] = {}
    offset = 0
    dtypes = {"FP64": "<f8", "INT64": "<i8", "BOOL": "?", "FP32": "<f4"}
    for tensor in header["outputs"]:
        size = (tensor.get("parameters") or {}).get("binary_data_size")
        shape = tensor["shape"]
        if size is None:
            out[tensor["name"]] = np.asarray(tensor["data"]).reshape(shape)
            continue
        chunk = rest[offset : offset + size]
        offset += size
        if tensor["datatype"] == "BYTES":
            items, i = [], 0
            while i < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, i)
                items.append(chunk[i + 4 : i + 4 + n].decode())
                i += 4 + n
            out[tensor["name"]] = np.asarray(items, dtype=object).reshape(shape)
        else:
            out[tensor["name"]] = np.frombuffer(chunk, dtype=dtypes[tensor["datatype"]]).reshape(
                shape
            )
    assert offset == len(rest)
    return out


async def test_server_metadata_health_and_model_metadata(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "mlgate"
    assert "binary_tensor_data" in meta["extensions"]
    assert (await client.get("/v2/health/live")).status_code == 200
    assert (await client.get("/v2/health/ready")).json() == {"ready": True}
    ids = (await client.get("/v2/models/ids")).json()
    assert ids["name"] == "ids" and ids["versions"] == ["1", "2", "3", "4"]
    assert ids["inputs"] == [{"name": "input", "datatype": "FP64", "shape": [-1, 77]}]
    names = {o["name"]: o for o in ids["outputs"]}
    assert names["probabilities"] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 7]}
    assert names["predicted_class_name"]["datatype"] == "BYTES"
    assert ids["parameters"]["feature_names"][0] == "Flow Duration"
    iot = (await client.get("/v2/models/iot/versions/1")).json()
    assert iot["parameters"]["version"] == "1"
    assert {o["name"] for o in iot["outputs"]} >= {"anomaly_score", "is_anomaly"}
    ready = await client.get("/v2/models/iot/versions/stable/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_unknown_models_and_versions_are_404_in_the_oip_shape(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/v2/models/nope", "/v2/models/ids/versions/9", "/v2/models/nope/ready"):
        response = await client.get(path)
        assert response.status_code == 404
        body = response.json()
        assert set(body) == {"error"} and isinstance(body["error"], str)
    response = await client.post("/v2/models/nope/infer", json=ONE_ROW)
    assert response.status_code == 404 and set(response.json()) == {"error"}


async def test_json_matrix_equals_v1(client: httpx.AsyncClient) -> None:
    x = flows(5)
    v1 = (await client.post("/v1/models/ids/predict/batch", json={"instances": x.tolist()})).json()
    response = await client.post(
        "/v2/models/ids/infer",
        json={
            "id": "r-1",
            "inputs": [{"name": "flows", "shape": [5, 77], "datatype": "FP64", "data": x.tolist()}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "r-1" and body["model_name"] == "ids" and body["model_version"] == "3"
    assert body["parameters"]["request_id"] == response.headers["x-request-id"]
    out = parse_binary_response(response)
    expected = np.array([list(p["probabilities"].values()) for p in v1["predictions"]])
    np.testing.assert_array_equal(out["probabilities"], expected)
    assert out["predicted_class_name"].tolist() == [
        p["predicted_class_name"] for p in v1["predictions"]
    ]
    assert out["is_attack"].tolist() == [p["is_attack"] for p in v1["predictions"]]


async def test_binary_inputs_and_outputs_equal_json(client: httpx.AsyncClient) -> None:
    x = flows(3, seed=1)
    body, headers = binary_request(
        [("x", x.astype("<f8"), "FP64")], parameters={"binary_data_output": True}
    )
    response = await client.post("/v2/models/ids/versions/2/infer", content=body, headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    binary = parse_binary_response(response)
    json_response = await client.post(
        "/v2/models/ids/versions/2/infer",
        json={
            "inputs": [
                {"name": "x", "shape": [3, 77], "datatype": "FP64", "data": x.ravel().tolist()}
            ]
        },
    )
    as_json = parse_binary_response(json_response)
    for name in ("probabilities", "predicted_class", "confidence", "is_attack"):
        np.testing.assert_array_equal(binary[name], as_json[name])
    assert binary["predicted_class_name"].tolist() == as_json["predicted_class_name"].tolist()


async def test_per_feature_tensors_the_triton_way(client: httpx.AsyncClient) -> None:
    x = np.array([READING, [95.0, 2.8, 6.5, 152.0, 87.5]], dtype=np.float32)
    inputs = [
        {"name": name, "shape": [2, 1], "datatype": "FP32", "data": x[:, j].tolist()}
        for j, name in enumerate(IOT_NAMES)
    ]
    inputs.append({"name": "duty_cycle", "shape": [2], "datatype": "FP32", "data": [0.7, 0.7]})
    response = await client.post(
        "/v2/models/iot/infer",
        json={
            "inputs": inputs,
            "outputs": [{"name": "is_anomaly"}, {"name": "explanation"}, {"name": "anomaly_score"}],
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["ignored_inputs"] == "duty_cycle"
    assert [o["name"] for o in body["outputs"]] == ["is_anomaly", "explanation", "anomaly_score"]
    v1 = (
        await client.post(
            "/v1/models/iot/predict/batch",
            json={"instances": x.astype(np.float64).tolist()},
        )
    ).json()
    out = parse_binary_response(response)
    assert out["is_anomaly"].tolist() == [p["is_anomaly"] for p in v1["predictions"]]
    assert out["is_anomaly"].tolist() == [False, True]
    np.testing.assert_allclose(
        out["anomaly_score"], [p["anomaly_score"] for p in v1["predictions"]], rtol=1e-12
    )
    assert out["explanation"][1].startswith("Sensors deviating most")


async def test_output_selection_mixes_binary_and_json(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/ids/infer",
        json={
            "inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}],
            "outputs": [
                {"name": "predicted_class_name", "parameters": {"binary_data": True}},
                {"name": "confidence", "parameters": {"binary_data": False}},
            ],
        },
    )
    assert response.status_code == 200
    header_length = int(response.headers[HEADER.lower()])
    header = orjson.loads(response.content[:header_length])
    first, second = header["outputs"]
    assert first["parameters"]["binary_data_size"] == len(response.content) - header_length
    assert "data" in second and len(second["data"]) == 1
    out = parse_binary_response(response)
    assert out["predicted_class_name"].tolist() == ["BENIGN"]


async def test_integer_and_float32_inputs_are_accepted(client: httpx.AsyncClient) -> None:
    x = np.arange(77 * 2, dtype=np.int32).reshape(2, 77)
    body, headers = binary_request([("x", x, "INT32")])
    as_int = await client.post("/v2/models/ids/infer", content=body, headers=headers)
    as_float = await client.post(
        "/v2/models/ids/infer",
        json={
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 77],
                    "datatype": "FP64",
                    "data": x.astype(float).ravel().tolist(),
                }
            ]
        },
    )
    assert as_int.status_code == as_float.status_code == 200
    np.testing.assert_array_equal(
        parse_binary_response(as_int)["probabilities"],
        parse_binary_response(as_float)["probabilities"],
    )


async def test_device_id_parameter_scores_against_the_device() -> None:
    async with running_app(make_settings(), as_admin=True) as (_, client):
        await _device_scoring(client)
    async with running_app(make_settings()) as (_, anonymous):
        response = await anonymous.post(
            "/v2/models/iot/infer",
            json={
                "inputs": [{"name": "x", "shape": [1, 5], "datatype": "FP64", "data": READING}],
                "parameters": {"device_id": "pump-9"},
            },
        )
    assert response.status_code == 401 and set(response.json()) == {"error"}


async def _device_scoring(client: httpx.AsyncClient) -> None:
    x = np.array([READING] * 3)
    # Version 2 scores against device baselines (stable, 3, has per-device detectors).
    response = await client.post(
        "/v2/models/iot/versions/2/infer",
        json={
            "inputs": [{"name": "x", "shape": [3, 5], "datatype": "FP64", "data": x.tolist()}],
            "parameters": {"device_id": "pump-9"},
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["parameters"]["device_id"] == "pump-9"
    out = parse_binary_response(response)
    assert out["calibrating"].tolist() == [True, True, True]
    assert out["calibration_seen"].tolist() == [1, 2, 3]
    baseline = (await client.get("/v1/models/iot/devices/pump-9/baseline")).json()
    assert baseline["calibration"]["seen"] == 3


BAD_REQUESTS: list[tuple[str, Any, dict[str, str] | None, int, str]] = [
    (
        "wrong width",
        {"inputs": [{"name": "x", "shape": [1, 76], "datatype": "FP64", "data": ROW[:76]}]},
        None,
        422,
        "expected [N, 77]",
    ),
    (
        "shape vs data",
        {"inputs": [{"name": "x", "shape": [2, 77], "datatype": "FP64", "data": ROW}]},
        None,
        422,
        "elements",
    ),
    (
        "bytes input",
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "BYTES", "data": ["a"] * 77}]},
        None,
        422,
        "datatype",
    ),
    (
        "unknown datatype",
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP128", "data": ROW}]},
        None,
        422,
        "datatype",
    ),
    (
        "string in data",
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ["a", *ROW[1:]]}]},
        None,
        422,
        "expected a number",
    ),
    (
        "negative shape",
        {"inputs": [{"name": "x", "shape": [-1, 77], "datatype": "FP64", "data": ROW}]},
        None,
        422,
        "shape",
    ),
    ("no inputs", {"inputs": []}, None, 422, "inputs"),
    ("not an object", [1, 2], None, 422, "inference request"),
    (
        "unknown output",
        {
            "inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}],
            "outputs": [{"name": "nope"}],
        },
        None,
        422,
        "no output",
    ),
    (
        "missing features",
        {"inputs": [{"name": "temperature", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
        None,
        422,
        "missing features",
    ),
    (
        "int8 out of range",
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "INT8", "data": [1000] * 77}]},
        None,
        422,
        "range of INT8",
    ),
    (
        "fp32 overflow",
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP32", "data": [1e300] * 77}]},
        None,
        422,
        "range of FP32",
    ),
    (
        "binary size lies",
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [1, 77],
                    "datatype": "FP64",
                    "parameters": {"binary_data_size": 8},
                }
            ]
        },
        "binary",
        422,
        "binary",
    ),
    (
        "bad device",
        {
            "inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}],
            "parameters": {"device_id": "a b"},
        },
        None,
        422,
        "device_id",
    ),
]


@pytest.mark.parametrize(
    ("what", "document", "mode", "status", "message"),
    BAD_REQUESTS,
    ids=[b[0] for b in BAD_REQUESTS],
)
async def test_bad_tensors_are_4xx_in_the_oip_shape(
    client: httpx.AsyncClient,
    what: str,
    document: Any,
    mode: str | None,
    status: int,
    message: str,
) -> None:
    content = orjson.dumps(document)
    headers = {"content-type": "application/json"}
    if mode == "binary":
        headers = {HEADER: str(len(content))}
        content += b"\x00" * 16
    response = await client.post("/v2/models/ids/infer", content=content, headers=headers)
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert message in body["error"]


async def test_nan_is_refused_where_no_rule_applies_and_replaced_where_one_does(
    client: httpx.AsyncClient,
) -> None:
    x = np.full((1, 77), 0.5)
    x[0, 0] = np.nan
    body, headers = binary_request([("x", x, "FP64")])
    response = await client.post("/v2/models/ids/infer", content=body, headers=headers)
    assert response.status_code == 422
    assert "Flow Duration" in response.json()["error"]
    x[0, 0] = 0.5
    x[0, 13] = np.inf
    body, headers = binary_request([("x", x, "FP64")])
    response = await client.post("/v2/models/ids/infer", content=body, headers=headers)
    assert response.status_code == 200
    assert response.json()["parameters"]["substituted_cells"] == 1


@pytest.mark.parametrize(("length", "status"), [("99999", 400), ("abc", 400), ("-5", 400)])
async def test_a_header_length_beyond_the_body_is_400(
    client: httpx.AsyncClient, length: str, status: int
) -> None:
    response = await client.post(
        "/v2/models/ids/infer", content=b'{"inputs": []}', headers={HEADER: length}
    )
    assert response.status_code == status
    assert HEADER in response.json()["error"]


async def test_malformed_json_and_media_type(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v2/models/ids/infer", content=b"{nope", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400 and set(response.json()) == {"error"}
    response = await client.post(
        "/v2/models/ids/infer", content=b"a=1", headers={"content-type": "text/plain"}
    )
    assert response.status_code == 415 and set(response.json()) == {"error"}


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_compressed_requests(client: httpx.AsyncClient, encoding: str) -> None:
    raw = orjson.dumps(
        {"inputs": [{"name": "x", "shape": [1, 77], "datatype": "FP64", "data": ROW}]}
    )
    content = gzip.compress(raw) if encoding == "gzip" else zlib.compress(raw)
    response = await client.post(
        "/v2/models/ids/infer",
        content=content,
        headers={"content-encoding": encoding, "content-type": "application/json"},
    )
    assert response.status_code == 200, response.text


async def test_a_decompression_bomb_is_413() -> None:
    settings = make_settings(server={"max_body_bytes": 100_000})
    async with running_app(settings) as (_, client):
        bomb = gzip.compress(b" " * 5_000_000)
        response = await client.post(
            "/v2/models/ids/infer", content=bomb, headers={"content-encoding": "gzip"}
        )
    assert response.status_code == 413 and set(response.json()) == {"error"}


async def test_auth_scopes_and_row_charges_are_those_of_v1() -> None:
    settings = make_settings(
        auth={"anonymous_enabled": False}, rate_limit={"enabled": True, "backend": "memory"}
    )
    async with running_app(settings) as (app, client):
        response = await client.post("/v2/models/ids/infer", json={"inputs": []})
        assert response.status_code == 401
        assert set(response.json()) == {"error"}
        assert "www-authenticate" in response.headers
        assert (await client.get("/v2/models/ids")).status_code == 401
        assert (await client.get("/v2/health/ready")).status_code == 200
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user(
            "reader", password=None, scopes=["models:read"], tier="pro"
        )
        reader = str((await accounts.create_key(user.id, name="r")).plaintext)
        headers = {"X-API-Key": reader}
        assert (await client.get("/v2/models/ids", headers=headers)).status_code == 200
        forbidden = await client.post("/v2/models/ids/infer", json={"inputs": []}, headers=headers)
        assert forbidden.status_code == 403 and set(forbidden.json()) == {"error"}
        user = await accounts.create_user("scorer", password=None, scopes=["predict"], tier="free")
        overrides = {"requests_per_minute": 100, "rows_per_minute": 45}
        created = await accounts.create_key(user.id, name="s", rate_limit_overrides=overrides)
        scorer = str(created.plaintext)
        body = {
            "inputs": [{"name": "x", "shape": [40, 77], "datatype": "FP64", "data": [ROW] * 40}]
        }
        response = await client.post(
            "/v2/models/ids/infer", json=body, headers={"X-API-Key": scorer}
        )
        assert response.status_code == 200
        # 45 rows a minute, 40 spent (the rows bucket is the strictest).
        assert response.headers["ratelimit-remaining"] == "5"


async def test_repository_extension_needs_admin_and_loads_and_unloads() -> None:
    async with running_app(make_settings(auth={"anonymous_enabled": False})) as (app, client):
        assert (await client.post("/v2/repository/index")).status_code == 401
        client.headers["X-API-Key"] = await create_admin_key(app)
        index = (await client.post("/v2/repository/index")).json()
        assert {"name": "ids", "version": "2", "state": "READY", "reason": ""} in index
        unload = await client.post("/v2/repository/models/ids/unload")
        assert unload.status_code == 200
        gone = await client.post("/v2/models/ids/infer", json=ONE_ROW)
        assert gone.status_code == 404
        index = (await client.post("/v2/repository/index", json={})).json()
        assert {"name": "ids", "state": "UNAVAILABLE", "reason": "unloaded"} in index
        ready_only = (await client.post("/v2/repository/index", json={"ready": True})).json()
        assert all(row["state"] == "READY" for row in ready_only)
        # A reload does not bring back what an operator unloaded...
        await client.post("/v1/admin/models/reload")
        assert (await client.get("/v2/models/ids")).status_code == 404
        # ...a load does.
        load = await client.post("/v2/repository/models/ids/load")
        assert load.status_code == 200
        assert (await client.get("/v2/models/ids/ready")).status_code == 200
        missing = await client.post("/v2/repository/models/nope/load")
        assert missing.status_code == 404 and set(missing.json()) == {"error"}
