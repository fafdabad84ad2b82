"""/health/detailed (admin): database, Redis, models, audit queue, batchers and
resources of the worker, each with a status and a latency."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import create_admin_key, make_settings, running_app

ROW = [0.5] * 77
CHECKS = {"database", "redis", "models", "audit_queue", "batchers", "resources"}


async def test_detailed_health_names_every_check_with_status_and_latency() -> None:
    settings = make_settings(auth={"anonymous_enabled": False}, models={"batching": True})
    async with running_app(settings) as (app, client):
        admin = {"X-API-Key": await create_admin_key(app)}
        assert (await client.get("/health/detailed")).status_code == 401
        accounts = app.state.mlgate.accounts
        user = await accounts.create_user("viewer", password=None, scopes=["models:read"])
        viewer = str((await accounts.create_key(user.id, name="k")).plaintext)
        assert (
            await client.get("/health/detailed", headers={"X-API-Key": viewer})
        ).status_code == 403
        answer = await client.post("/v1/models/ids/predict", json={"features": ROW}, headers=admin)
        assert answer.status_code == 200
        response = await client.get("/health/detailed", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    checks: dict[str, Any] = body["checks"]
    assert set(checks) == CHECKS
    for name, check in checks.items():
        assert check["latency_ms"] >= 0, name
    assert body["status"] == "ok"
    assert checks["database"] == {**checks["database"], "status": "ok", "backend": "sqlite"}
    assert checks["redis"]["status"] == "off"
    assert checks["models"]["status"] == "ok" and "ids" in checks["models"]["loaded"]
    assert checks["audit_queue"]["status"] == "ok" and checks["audit_queue"]["dropped"] == 0
    (ids,) = [v for v in checks["batchers"]["versions"] if v["model"] == "ids"]
    assert ids["version"] == answer.json()["model_version"] and ids["batching"] is True
    assert ids["batches"] == 1 and ids["in_flight"] == 0
    resources = checks["resources"]
    assert resources["status"] == "ok"
    assert resources["rss_bytes"] > 10_000_000 and resources["open_fds"] > 0
    assert 0 <= resources["event_loop_lag_ms"] < 100


async def test_redis_down_and_a_failed_model_show(model_repo: Path) -> None:
    broken = model_repo / "ids" / "99"
    shutil.copytree(model_repo / "ids" / "1", broken)
    manifest = yaml.safe_load((broken / "manifest.yaml").read_text())
    manifest.update(version="99", runtime="no-such-runtime")
    (broken / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    settings = make_settings(
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        models={"repository": model_repo},
    )
    async with running_app(settings, as_admin=True) as (_, client):
        body = (await client.get("/health/detailed")).json()
        assert (await client.get("/health/ready")).status_code == 200  # still serving
    assert body["checks"]["redis"]["status"] == "down"
    assert body["checks"]["models"]["status"] == "degraded"
    assert body["checks"]["models"]["failed"] == {"ids": ["99"]}
    assert body["status"] == "down"


async def test_redis_up(redis_url: str) -> None:
    async with running_app(make_settings(redis_url=redis_url), as_admin=True) as (_, client):
        body = (await client.get("/health/detailed")).json()
    assert body["checks"]["redis"]["status"] == "ok"
