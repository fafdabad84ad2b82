"""An alias moved through one real worker reaches the other within the poll interval,
and a restart keeps it (``mlgate serve --workers 2``)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.servers import Worker, clean_env, connections_to_workers, mlgate_serve

FEATURES = {"features": [0.5] * 77}
POLL_S = 0.3


def _mlgate(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "mlgate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _version(worker: Worker) -> str:
    response = worker.request("POST", "/v1/models/ids/predict", json=FEATURES)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def _stable(worker: Worker) -> str:
    return str(worker.request("GET", "/v1/models/ids").json()["aliases"]["stable"])


@pytest.mark.slow
def test_an_alias_move_reaches_every_worker_and_survives_a_restart(
    tmp_path: Path, model_repo: Path
) -> None:
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__BOOTSTRAP_ADMIN="false",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_AUTH__ARGON2_TIME_COST="1",
        MLGATE_AUTH__ARGON2_MEMORY_COST_KIB="8",
        MLGATE_AUTH__ARGON2_PARALLELISM="1",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_ALIASES__POLL_INTERVAL_S=str(POLL_S),
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
    )
    _mlgate(env, "users", "create", "ops", "--no-password", "--admin")
    headers = {"X-API-Key": _mlgate(env, "keys", "create", "--user", "ops", "--name", "ops")}
    args = ("--workers", "2", "--repository", str(model_repo))

    serve = mlgate_serve(tmp_path, env, *args, ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2) as pinned:
        mover, other = (conns[0] for conns in pinned.values())
        assert (_version(mover), _version(other)) == ("3", "3")  # model.yaml's stable
        moved = mover.request(
            "POST",
            "/v1/admin/models/ids/aliases",
            json={"alias": "stable", "version": "2"},
            headers=headers,
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["moved_by"] == "ops"
        assert _stable(mover) == "2"  # at once where it was moved
        started = time.monotonic()
        while _stable(other) != "2":
            assert time.monotonic() - started < 10 * POLL_S + 5, "the move never arrived"
            time.sleep(0.05)
        assert (_version(mover), _version(other)) == ("2", "2")

    # Restarted, every worker serves the moved alias from its first request.
    serve = mlgate_serve(tmp_path, env, *args, ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2) as pinned:
        workers = [conns[0] for conns in pinned.values()]
        assert [_stable(w) for w in workers] == ["2", "2"]
        assert [_version(w) for w in workers] == ["2", "2"]
        history = workers[0].request("GET", "/v1/admin/models/ids/aliases", headers=headers)
        assert [
            (m["alias"], m["from_version"], m["to_version"]) for m in history.json()["history"]
        ] == [("stable", "3", "2")]
