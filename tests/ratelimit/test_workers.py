"""Exactness across processes: N requests a minute means N, however many workers serve.

Three real uvicorn workers (``mlgate serve --workers 3``) share a Redis; a free-tier key
(10 requests a minute) fires 30 requests at once, ten through each worker, and exactly 10
are admitted. The memory backend on one worker is held to the same standard in-process.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_JWT_SECRET, make_settings, running_app
from tests.servers import Worker, clean_env, connections_to_workers, mlgate_serve

ROW = [0.5] * 77
FREE_TIER_REQUESTS = 10


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


def _fire(connections: list[Worker], headers: dict[str, str]) -> Counter[int]:
    """One request on every connection, all at the same time."""

    def one(worker: Worker) -> int:
        response = worker.request(
            "POST", "/v1/models/ids/predict", json={"features": ROW}, headers=headers
        )
        return response.status_code

    with ThreadPoolExecutor(len(connections)) as pool:
        return Counter(pool.map(one, connections))


@pytest.mark.slow
def test_three_workers_sharing_redis_admit_exactly_n(
    tmp_path: Path, redis_url: str, key_prefix: str
) -> None:
    env = clean_env(
        **{
            "MLGATE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'mlgate.db'}",
            "MLGATE_AUTH__JWT_SECRET": TEST_JWT_SECRET,
            "MLGATE_AUTH__BOOTSTRAP_ADMIN": "false",
            "MLGATE_AUTH__ARGON2_TIME_COST": "1",
            "MLGATE_AUTH__ARGON2_MEMORY_COST_KIB": "8",
            "MLGATE_AUTH__ARGON2_PARALLELISM": "1",
            "MLGATE_REDIS_URL": redis_url,
            "MLGATE_RATE_LIMIT__BACKEND": "redis",
            "MLGATE_RATE_LIMIT__REDIS_KEY_PREFIX": key_prefix,
            "MLGATE_OBSERVABILITY__ACCESS_LOG": "true",
        }
    )
    _mlgate(env, "users", "create", "load-tester", "--no-password", "--scope", "predict")
    key = _mlgate(env, "keys", "create", "--user", "load-tester", "--name", "load")
    serve = mlgate_serve(tmp_path, env, "--workers", "3", ready_in_a_row=20, log_level="info")
    # Ten connections to each of the three workers (checked in the access log).
    with serve as server, connections_to_workers(server, 3, FREE_TIER_REQUESTS) as workers:
        connections = [w for conns in workers.values() for w in conns]
        counts = _fire(connections, {"X-API-Key": key})
    assert counts == {200: FREE_TIER_REQUESTS, 429: 2 * FREE_TIER_REQUESTS}


async def test_one_worker_memory_backend_admits_exactly_n() -> None:
    settings = make_settings(
        auth={"anonymous_enabled": False}, rate_limit={"enabled": True, "backend": "memory"}
    )
    async with running_app(settings) as (app, client):
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user(
            f"u{secrets.token_hex(3)}", password=None, scopes=["predict"]
        )
        key = str((await accounts.create_key(user.id, name="k")).plaintext)

        async def one() -> Any:
            return await client.post(
                "/v1/models/ids/predict", json={"features": ROW}, headers={"X-API-Key": key}
            )

        responses = await asyncio.gather(*(one() for _ in range(3 * FREE_TIER_REQUESTS)))
    counts = Counter(r.status_code for r in responses)
    assert counts == {200: FREE_TIER_REQUESTS, 429: 2 * FREE_TIER_REQUESTS}
