"""`mlgate serve` as a real process: a user's first command, and the README's examples
(curl and the `mlgate` CLI) run as written against it, with their documented results."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.conftest import FIXTURES, PROJECT_ROOT
from tests.servers import clean_env, mlgate_serve

KEY_PATTERN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


@dataclass(frozen=True)
class Server:
    url: str
    api_key: str
    """The admin key the first start printed (once) on stderr."""
    workdir: Path
    """Where it runs: the CLI run from here uses the same database (./var/mlgate.db)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Run from an empty directory, as a newcomer would: the default SQLite database
    # (./var/mlgate.db) is created there and the first start prints an admin key.
    workdir = tmp_path_factory.mktemp("serve")
    with mlgate_serve(workdir, clean_env()) as running:
        output = running.log.read_text()
        keys = KEY_PATTERN.findall(output)
        assert len(keys) == 1, f"expected one bootstrap key in:\n{output}"
        yield Server(running.url, keys[0], workdir)


@pytest.mark.slow
def test_serve_answers_the_seed_clients(server: Server) -> None:
    body = json.loads((FIXTURES / "seeds" / "rlids_predict.json").read_text())
    assert httpx.post(f"{server.url}/predict", json=body, timeout=10).status_code == 401
    headers = {"X-API-Key": server.api_key}
    response = httpx.post(f"{server.url}/predict", json=body, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json()["model_name"] == "ids"
    assert "x-request-id" in response.headers
    iot = json.loads((FIXTURES / "seeds" / "iot_predict.json").read_text())
    response = httpx.post(f"{server.url}/predict", json=iot, headers=headers, timeout=10)
    assert response.status_code == 200
    assert response.json()["model_used"] == "isolation_forest"
    health = httpx.get(f"{server.url}/health", timeout=10).json()
    assert health["status"] == "healthy"


def readme_curl_commands() -> list[str]:
    """Every curl command in the README's bash blocks, continuation lines joined."""
    text = (PROJECT_ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")
        commands += [
            line.strip() for line in joined.splitlines() if line.strip().startswith("curl")
        ]
    return commands


def _ids_port_scan(body: dict[str, Any]) -> None:
    # "this one is a port scan from the CICIDS2017 sample"
    assert body["predicted_class_name"] == "PortScan" and body["is_attack"] is True
    if "explanation" in body:  # the `"explain": 3` example: why, in three features
        explanation = body["explanation"]
        assert explanation["explained_class"] == "PortScan"
        assert explanation["method"] == "tree_shap" and len(explanation["top"]) == 3


def _iot_normal_reading(body: dict[str, Any]) -> None:
    # A normal pump reading; "unknown fields are ignored and listed in ignored_features".
    assert body["is_anomaly"] is False
    assert body["ignored_features"] == ["duty_cycle"]


def _iot_batch(body: dict[str, Any]) -> None:
    # "with a summary (counts per class, attack or anomaly rate)"; the first row is the
    # normal reading above.
    assert body["summary"]["total"] == 2 and "anomaly_rate" in body["summary"]
    assert body["predictions"][0]["is_anomaly"] is False


def _model_list(body: dict[str, Any]) -> None:
    names = {m["name"] for m in body["models"]}
    assert {"ids", "iot"} <= names


def _ids_info(body: dict[str, Any]) -> None:
    # "schema, classes, versions and held-out metrics"
    assert len(body["schema"]["features"]) == 77 and "PortScan" in body["schema"]["classes"]
    assert {"1", "2"} <= {v["version"] for v in body["versions"]}
    assert body["metrics"]["macro_f1"] > 0


def _seed_iot(body: dict[str, Any]) -> None:
    assert body["model_used"] == "isolation_forest" and "is_anomaly" in body


def _seed_health(body: dict[str, Any]) -> None:
    assert body["status"] == "healthy"


def _seed_model_info(body: dict[str, Any]) -> None:
    assert body["model_name"] == "ids"


def _alias_moved(body: dict[str, Any]) -> None:
    # "points canary at version 2 ... with who made it and when"
    assert body["alias"] == "canary" and body["to_version"] == "2"
    assert body["aliases"]["canary"] == "2" and body["moved_by"] == "admin"
    assert body["moved_at"]


def _metrics(samples: dict[str, Any]) -> None:
    # "GET /metrics answers in the Prometheus text format"
    assert "mlgate_http_requests_total" in samples
    assert "mlgate_predictions_total" in samples


def _prometheus_text(body: str) -> dict[str, Any]:
    from prometheus_client.parser import text_string_to_metric_families

    return {s.name: s for f in text_string_to_metric_families(body) for s in f.samples}


#: Answers that are not JSON: how to read them.
NOT_JSON: dict[str, Callable[[str], dict[str, Any]]] = {"/metrics": _prometheus_text}

#: What the README says each curl example answers, by path (each example needs one).
DOCUMENTED: dict[str, Callable[[dict[str, Any]], None]] = {
    "/v1/models/ids/predict": _ids_port_scan,
    "/v1/models/iot/predict": _iot_normal_reading,
    "/v1/models/iot/predict/batch": _iot_batch,
    "/v1/models": _model_list,
    "/v1/models/ids": _ids_info,
    "/predict": _seed_iot,
    "/health": _seed_health,
    "/model/info": _seed_model_info,
    "/v1/admin/models/ids/aliases": _alias_moved,
    "/metrics": _metrics,
}


def _run_curl(server: Server, command: str) -> tuple[str, str]:
    """(status, body) of a README curl command, pointed at ``server``."""
    command = command.replace("$MLGATE_API_KEY", server.api_key)
    argv = shlex.split(command.replace("http://127.0.0.1:8000", server.url))
    argv[1:1] = ["-w", "\n%{http_code}"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    body, _, status = result.stdout.rpartition("\n")
    return status, body


@pytest.mark.slow
def test_readme_curl_examples_work_as_written(server: Server) -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 6
    checked = set()
    for command in commands:
        # As a reader would run it: with the bootstrap key in MLGATE_API_KEY.
        status, body = _run_curl(server, command)
        assert status == "200", f"{command}\n-> {status} {body[:1000]}"
        url = next(word for word in shlex.split(command) if word.startswith("http"))
        path = urlsplit(url).path
        assert path in DOCUMENTED, f"no documented result to check for {command}"
        try:
            DOCUMENTED[path](NOT_JSON.get(path, json.loads)(body))
        except (AssertionError, KeyError) as exc:
            raise AssertionError(f"{command}\n-> {body[:1000]}") from exc
        checked.add(path)
    assert checked == set(DOCUMENTED), f"README examples gone: {set(DOCUMENTED) - checked}"


def readme_account_commands() -> list[str]:
    """The lines of the README's users-and-keys example, without their comments."""
    text = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, flags=re.S)
    (block,) = [b for b in blocks if "mlgate users create alice" in b]
    return [line.split("  #", 1)[0].strip() for line in block.splitlines() if line.strip()]


def _cli(server: Server, command: str, stdin: str = "") -> str:
    """A README ``mlgate ...`` line run as written from the server's directory (so on its
    database), in a session without a terminal: a password prompt reads stdin."""
    argv = [sys.executable, "-m", "mlgate", *shlex.split(command)[1:]]
    result = subprocess.run(
        argv,
        cwd=server.workdir,
        env=clean_env(COLUMNS="200"),  # a terminal wide enough for `keys list`
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=True,
    )
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _me(server: Server, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/users/me", headers=headers, timeout=10)


@pytest.mark.slow
def test_readme_user_and_key_examples_work_as_written(server: Server) -> None:
    lines = readme_account_commands()
    by_start = {" ".join(line.split()[:3]): line for line in lines}
    assert set(by_start) == {
        "mlgate users create",
        "mlgate keys create",
        "mlgate keys list",
        "mlgate keys revoke",
        "mlgate users disable",
        "curl -s http://127.0.0.1:8000/v1/token",
    }, lines
    password = "correct-horse-battery-staple"

    # "asks for a password" (twice: it is confirmed)
    _cli(server, by_start["mlgate users create"], stdin=f"{password}\n{password}\n")
    # "prints the key once"
    key = _cli(server, by_start["mlgate keys create"]).strip()
    assert KEY_PATTERN.fullmatch(key), key
    me = _me(server, {"X-API-Key": key})
    assert me.status_code == 200, me.text
    assert me.json()["subject"] == "alice" and me.json()["tier"] == "pro"
    assert sorted(me.json()["scopes"]) == ["models:read", "predict"]
    listing = _cli(server, by_start["mlgate keys list"])
    prefix = key.split("_")[1]
    assert "billing-service" in listing and prefix in listing

    # "-> access_token" (run before `users disable`, which refuses logins)
    login = by_start["curl -s http://127.0.0.1:8000/v1/token"].replace(
        "password=...", f"password={password}"
    )
    status, body = _run_curl(server, login)
    assert status == "200", body
    token = json.loads(body)["access_token"]
    assert _me(server, {"Authorization": f"Bearer {token}"}).status_code == 200

    # "refused by every worker within 5 s" (the server caches verified credentials for
    # MLGATE_AUTH__PRINCIPAL_CACHE_TTL_S; a CLI change reaches it at once only via Redis)
    _cli(server, by_start["mlgate keys revoke"].replace("<id or prefix>", prefix))
    assert _eventually(lambda: _me(server, {"X-API-Key": key}).status_code, 401, within_s=6)
    _cli(server, by_start["mlgate users disable"])
    bearer = {"Authorization": f"Bearer {token}"}
    assert _eventually(lambda: _me(server, bearer).status_code, 403, within_s=6)
    status, _ = _run_curl(server, login)
    assert status == "403"


def _eventually(probe: Callable[[], int], expected: int, within_s: float) -> bool:
    """Whether ``probe()`` gives ``expected`` within ``within_s`` seconds."""
    deadline = time.monotonic() + within_s
    while True:
        if probe() == expected:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def readme_model_commands() -> list[str]:
    """The ``mlgate models ...`` lines of the README's bash blocks, without comments."""
    text = (PROJECT_ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            if line.startswith("mlgate models"):
                lines.append(line.split("  #", 1)[0].strip())
    return lines


@pytest.mark.slow
def test_readme_model_commands_work_as_written(server: Server) -> None:
    lines = readme_model_commands()
    assert [" ".join(line.split()[:3]) for line in lines] == [
        "mlgate models list",
        "mlgate models reload",
    ], lines
    listing = _cli(server, lines[0])
    assert "ids" in listing and "iot-device-distance" in listing
    # "admin key in MLGATE_API_KEY"
    argv = [sys.executable, "-m", "mlgate", *shlex.split(lines[1])[1:]]
    argv = [a.replace("http://127.0.0.1:8000", server.url) for a in argv]
    result = subprocess.run(
        argv,
        env=clean_env(MLGATE_API_KEY=server.api_key),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] == {} and "ids" in report["unchanged"]
