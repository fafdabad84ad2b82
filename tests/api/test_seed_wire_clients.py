"""The seed's RL-IDS clients, on the wire libraries they use, against a real server.

Seed 000 gives its users two clients: Python on aiohttp (a pooled session, JSON bodies,
status checks, ``await response.json()``) and JavaScript on ``fetch`` (a bearer API key,
``AbortSignal.timeout``, batches in chunks). ``test_seed_clients.py`` checks the shapes
in process; here the same calls go through aiohttp and through Node's fetch to
`mlgate serve`, and both must read the same predictions as the v1 API gives.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest

from tests.api.test_seed_clients import assert_rlids_result
from tests.conftest import DATA_DIR, FIXTURES
from tests.servers import LiveServer

SAMPLE = DATA_DIR / "cicids2017" / "original_format_sample" / "CICIDS2017_sample.csv"
JS_CLIENT = FIXTURES / "clients" / "rlids_client.mjs"


def flows(count: int) -> tuple[list[list[float]], list[str]]:
    """The first ``count`` flows of the sample whose 77 cells are all finite numbers,
    and their labels."""
    rows, labels = [], []
    with SAMPLE.open(newline="") as f:
        for row in csv.reader(f):
            try:
                values = [float(v) for v in row[:-1]]
            except ValueError:
                continue  # the header
            if len(values) == 77 and all(abs(v) < float("inf") for v in values):
                rows.append(values)
                labels.append(row[-1])
            if len(rows) == count:
                break
    return rows, labels


def v1_classes(server: LiveServer, rows: list[list[float]]) -> list[str]:
    response = httpx.post(
        f"{server.url}/v1/models/ids/predict/batch",
        headers={"X-API-Key": server.admin_key},
        json={"instances": rows},
    )
    assert response.status_code == 200, response.text
    return [p["predicted_class_name"] for p in response.json()["predictions"]]


async def test_the_aiohttp_client(live_server: LiveServer) -> None:
    rows, _ = flows(12)
    expected = v1_classes(live_server, rows)
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=30, keepalive_timeout=30)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=30),
        headers={
            "User-Agent": "mlgate-test aiohttp client",
            "Authorization": f"Bearer {live_server.admin_key}",
        },
    ) as session:
        async with session.get(f"{live_server.url}/health") as response:
            assert response.status == 200
            assert (await response.json())["status"] == "healthy"
        async with session.get(f"{live_server.url}/model/info") as response:
            assert response.status == 200
            assert (await response.json())["input_features"] == 77
        async with session.post(
            f"{live_server.url}/predict", json={"features": rows[0]}
        ) as response:
            assert response.status == 200, await response.text()
            single = await response.json()
        assert_rlids_result(single)
        assert single["predicted_class_name"] == expected[0]
        got: list[str] = []
        for start in range(0, len(rows), 5):  # the client's chunks
            chunk = [{"features": r} for r in rows[start : start + 5]]
            async with session.post(f"{live_server.url}/predict/batch", json=chunk) as response:
                assert response.status == 200, await response.text()
                results = await response.json()
            for result in results:
                assert_rlids_result(result)
            got += [r["predicted_class_name"] for r in results]
        assert got == expected
        # What the client raises on: a status it does not retry, and a readable body.
        async with session.post(f"{live_server.url}/predict", json={"features": [1, 2]}) as r:
            assert r.status == 422
            assert json.loads(await r.text())["error"]["code"] == "validation_error"


def node() -> str:
    path = shutil.which("node")
    if path is None:
        reason = "Node.js is not installed (apt-get install nodejs)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}: required under CI", pytrace=False)
        pytest.skip(reason)
    return path


def test_the_javascript_fetch_client(live_server: LiveServer, tmp_path: Path) -> None:
    rows, _ = flows(10)
    expected = v1_classes(live_server, rows)
    flows_file = tmp_path / "flows.json"
    flows_file.write_text(json.dumps(rows))
    run = subprocess.run(
        [node(), str(JS_CLIENT), live_server.url, live_server.admin_key, str(flows_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    out: dict[str, Any] = json.loads(run.stdout)
    assert out["health"]["status"] == 200
    assert out["modelInfo"]["body"]["model_name"] == "ids"
    single = out["single"]
    assert single["status"] == 200
    assert single["contentType"] == "application/json"
    assert single["requestId"]
    assert_rlids_result(single["body"])
    assert single["body"]["predicted_class_name"] == expected[0]
    got = []
    for batch in out["batches"]:
        assert batch["status"] == 200, batch
        for result in batch["body"]:
            assert_rlids_result(result)
            got.append(result["predicted_class_name"])
    assert got == expected
    assert out["tooShort"]["status"] == 422
    assert out["tooShort"]["body"]["error"]["code"] == "validation_error"
    assert out["noKey"]["status"] == 401
    assert out["noKey"]["body"]["error"]["code"] == "unauthorized"
