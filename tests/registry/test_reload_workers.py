"""With several real workers, every worker follows the repository on disk
(``MLGATE_MODELS__WATCH_INTERVAL_S``): a new version and a moved alias reach each one."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.servers import Worker, clean_env, connections_to_workers, mlgate_serve

FEATURES = {"features": [0.5] * 77}


def add_version(repo: Path, model: str, source: str, version: str) -> None:
    target = repo / model / version
    shutil.copytree(repo / model / source, target)
    manifest = yaml.safe_load((target / "manifest.yaml").read_text())
    manifest["version"] = version
    (target / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))


def wait_for_latest(workers: list[Worker], version: str, timeout_s: float = 30) -> None:
    """Ask every worker in turn until each one's ``latest`` of ids is ``version`` (which
    also keeps their connections from going idle)."""
    deadline = time.monotonic() + timeout_s
    while True:
        seen = {w.pid: w.request("GET", "/v1/models/ids").json()["aliases"] for w in workers}
        if all(aliases["latest"] == version for aliases in seen.values()):
            return
        assert time.monotonic() < deadline, f"aliases by worker pid: {seen}"
        time.sleep(0.1)


@pytest.mark.slow
def test_every_worker_follows_the_repository(tmp_path: Path, model_repo: Path) -> None:
    env = clean_env(
        MLGATE_DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
        MLGATE_AUTH__ANONYMOUS_ENABLED="true",
        MLGATE_RATE_LIMIT__ENABLED="false",
        MLGATE_MODELS__WATCH_INTERVAL_S="0.2",
        MLGATE_OBSERVABILITY__ACCESS_LOG="true",
    )
    args = ("--workers", "2", "--repository", str(model_repo))
    serve = mlgate_serve(tmp_path, env, *args, ready_in_a_row=20, log_level="info")
    with serve as server, connections_to_workers(server, 2) as pinned:
        workers = [conns[0] for conns in pinned.values()]
        for worker in workers:
            before = worker.request("POST", "/v1/models/ids/predict", json=FEATURES).json()
            assert before["model_version"] == "3"  # stable
        # A deploy: version 12 copied in, and `stable` moved to it.
        add_version(model_repo, "ids", "1", "12")
        (model_repo / "ids" / "model.yaml").write_text(
            yaml.safe_dump({"aliases": {"stable": "12"}})
        )
        wait_for_latest(workers, "12")
        for worker in workers:
            info = worker.request("GET", "/v1/models/ids").json()
            assert info["aliases"] == {"latest": "12", "stable": "12"}
            after = worker.request("POST", "/v1/models/ids/predict", json=FEATURES)
            assert after.status_code == 200 and after.json()["model_version"] == "12"
