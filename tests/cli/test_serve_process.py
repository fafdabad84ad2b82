"""`mlgate serve` as a real process: a user's first command."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Run from an empty directory, as a newcomer would: the default SQLite database
    # (./var/mlgate.db) is created there and the first start prints an admin key.
    workdir = tmp_path_factory.mktemp("serve")
    with mlgate_serve(workdir, clean_env()) as running:
        output = running.log.read_text()
        keys = KEY_PATTERN.findall(output)
        assert len(keys) == 1, f"expected one bootstrap key in:\n{output}"
        yield Server(running.url, keys[0])


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


@pytest.mark.slow
def test_readme_curl_examples_work_as_written(server: Server) -> None:
    commands = readme_curl_commands()
    assert len(commands) >= 6
    for command in commands:
        # As a reader would run it: with the bootstrap key in MLGATE_API_KEY.
        command = command.replace("$MLGATE_API_KEY", server.api_key)
        argv = shlex.split(command.replace("http://127.0.0.1:8000", server.url))
        argv[1:1] = ["-w", "\n%{http_code}"]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
        body, _, status = result.stdout.rpartition("\n")
        assert status == "200", f"{command}\n-> {status} {body}"
        json.loads(body)
