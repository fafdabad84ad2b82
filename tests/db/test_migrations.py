"""The packaged migrations: they build what the models describe, run once under
concurrency, and the server applies them on start (or not, when told)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from mlgate.db.engine import build_engine, sqlite_path
from mlgate.db.migrate import (
    HEAD_REVISION,
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from mlgate.db.models import Base
from tests.conftest import make_settings, running_app


async def test_upgrade_builds_the_tables_once(database: dict[str, Any]) -> None:
    settings = make_settings(**database)
    engine = build_engine(settings)
    schema = settings.database.schema_name
    try:
        assert await current_revision(engine) is None
        assert await upgrade(engine, schema=schema) == head_revision()
        assert await upgrade(engine, schema=schema) == head_revision()
        async with engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
        assert {"users", "api_keys", "alembic_version"} <= tables
    finally:
        await engine.dispose()


def test_the_head_revision_constant_is_alembics_head() -> None:
    """A new migration must move HEAD_REVISION too, or every start would skip it."""
    assert head_revision() == HEAD_REVISION


async def test_a_database_at_head_is_recognised_without_alembic(
    database: dict[str, Any], monkeypatch: Any
) -> None:
    settings = make_settings(**database)
    engine = build_engine(settings)
    schema = settings.database.schema_name
    try:
        await upgrade(engine, schema=schema)
        calls: list[str] = []
        monkeypatch.setattr(command, "upgrade", lambda *a: calls.append("upgrade"))
        assert await upgrade(engine, schema=schema) == head_revision()
        assert calls == []  # one SELECT, no Alembic
        # One revision behind: Alembic runs (here the stand-in, which records the call).
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = '0006'"))
        await upgrade(engine, schema=schema)
        assert calls == ["upgrade"]
    finally:
        await engine.dispose()


async def test_migrations_match_the_models(database: dict[str, Any]) -> None:
    """Nothing for autogenerate to add: a model change without a migration fails here."""
    settings = make_settings(**database)
    engine = build_engine(settings)
    try:
        await upgrade(engine, schema=settings.database.schema_name)
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), Base.metadata)
            )
        assert diff == []
    finally:
        await engine.dispose()


async def test_concurrent_upgrades_are_safe(database: dict[str, Any]) -> None:
    settings = make_settings(**database)
    engines = [build_engine(settings) for _ in range(4)]
    try:
        results = await asyncio.gather(
            *(upgrade(e, schema=settings.database.schema_name) for e in engines)
        )
        assert set(results) == {head_revision()}
    finally:
        for engine in engines:
            await engine.dispose()


def test_sqlite_directory_is_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'deep' / 'er' / 'mlgate.db'}"
    engine = build_engine(make_settings(database_url=url))
    assert (tmp_path / "deep" / "er").is_dir()
    assert sqlite_path(str(engine.url)) == tmp_path / "deep" / "er" / "mlgate.db"
    assert sqlite_path("sqlite+aiosqlite://") is None
    assert sqlite_path("postgresql+asyncpg://u@h/db") is None


async def test_server_migrates_on_start(database: dict[str, Any], tmp_path: Path) -> None:
    settings = make_settings(**database, models={"repository": tmp_path / "none"})
    async with running_app(settings) as (app, _):
        assert await current_revision(app.state.mlgate.engine) == head_revision()


async def test_without_auto_migrate_an_empty_database_is_a_503(
    database: dict[str, Any], tmp_path: Path
) -> None:
    """Never a 500: requests that need the database say it is unavailable."""
    no_migrations = {**database.get("database", {}), "auto_migrate": False}
    settings = make_settings(
        **{**database, "database": no_migrations},
        models={"repository": tmp_path / "none"},
        auth={"anonymous_enabled": False},
    )
    async with running_app(settings) as (app, client):
        assert await current_revision(app.state.mlgate.engine) is None
        key = "mlg_0123456789ab_" + "A" * 43
        response = await client.get("/v1/models", headers={"X-API-Key": key})
        assert response.status_code == 503
        assert response.json()["error"]["message"] == "the authentication database is unavailable"
        login = await client.post("/v1/token", data={"username": "a", "password": "b" * 8})
        assert login.status_code == 503


async def test_0003_keeps_existing_rows_and_downgrades(database: dict[str, Any]) -> None:
    """Users get token epoch 0 and no tenant; baselines stored before device owners
    existed are kept under the owner nobody is (``unowned``)."""
    settings = make_settings(**database)
    engine = build_engine(settings)
    schema = settings.database.schema_name
    now = "2026-01-01 00:00:00"
    try:
        assert await upgrade(engine, schema=schema, revision="0002") == "0002"
        async with engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO users (username, disabled, tier, scopes, created_at, "
                    f"updated_at) VALUES ('old', false, 'free', '[]', '{now}', '{now}')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO device_baselines (model, device_id, features, required, "
                    "seen, sums, sumsq, source, revision, created_at, updated_at) VALUES "
                    f"('iot', 'pump-1', '[]', 5, 2, '[]', '[]', 'stream', 3, '{now}', '{now}')"
                )
            )
        assert await upgrade(engine, schema=schema) == head_revision()
        async with engine.begin() as conn:
            user = (await conn.execute(text("SELECT token_epoch, tenant FROM users"))).one()
            assert tuple(user) == (0, None)
            row = (
                await conn.execute(text("SELECT owner, seen, revision FROM device_baselines"))
            ).one()
            assert tuple(row) == ("unowned", 2, 3)
            # The same device id under another owner is another device.
            await conn.execute(
                text(
                    "INSERT INTO device_baselines (owner, model, device_id, features, required, "
                    "seen, sums, sumsq, source, revision, created_at, updated_at) VALUES "
                    "('user:1', 'iot', 'pump-1', '[]', 5, 0, '[]', '[]', 'stream', 1, "
                    f"'{now}', '{now}')"
                )
            )
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0002"))
        assert await current_revision(engine) == "0002"
        async with engine.connect() as conn:
            left = (await conn.execute(text("SELECT device_id FROM device_baselines"))).all()
            assert [tuple(r) for r in left] == [("pump-1",)]
    finally:
        await engine.dispose()


async def test_0007_moves_the_audit_log_into_two_tables_and_back(
    database: dict[str, Any],
) -> None:
    """Records written before the split read the same through the ``predictions`` view
    (request columns from the request record, row columns from the row), and a
    downgrade puts them back in one table."""
    settings = make_settings(**database)
    engine = build_engine(settings)
    schema = settings.database.schema_name
    columns = (
        "request_key, row_index, shadow, created_at, request_id, principal, user_id, key_id, "
        "model, version, protocol, task, latency_ms, device_id, cache_hit, input_hash, "
        "predicted_class, predicted, confidence, probabilities, is_attack, score, "
        "is_anomaly, threshold, calibration_seen, inputs"
    )
    records = [
        # Two rows of one request, its shadow version's answer to row 1, another request.
        "('K1', 0, false, '2026-01-01 00:00:00', 'r1', 'user:1', 1, NULL, 'ids', '1', "
        "'v1', 'classification', 2.5, NULL, false, 'h0', 3, 'DoS', 0.9, '[0.1, 0.9]', "
        "true, NULL, NULL, NULL, NULL, NULL)",
        "('K1', 1, false, '2026-01-01 00:00:00', 'r1', 'user:1', 1, NULL, 'ids', '1', "
        "'v1', 'classification', 2.5, NULL, false, 'h1', 0, 'BENIGN', 0.8, '[0.8, 0.2]', "
        "false, NULL, NULL, NULL, NULL, '[1.0, 2.0]')",
        "('K1', 1, true, '2026-01-01 00:00:01', 'r1', 'user:1', 1, NULL, 'ids', '2', "
        "'v1', 'classification', 7.0, NULL, false, 'h1', 3, 'DoS', 0.6, '[0.4, 0.6]', "
        "true, NULL, NULL, NULL, NULL, NULL)",
        "('K2', 0, false, '2026-01-01 00:00:02', 'r2', 'key:4', 2, 4, 'iot', '3', "
        "'oip', 'anomaly', 1.0, 'pump-1', true, 'h2', NULL, NULL, 0.7, NULL, NULL, 3.5, "
        "true, 2.0, NULL, NULL)",
    ]
    query = text(
        "SELECT request_key, row_index, shadow, request_id, principal, user_id, key_id, "
        "model, version, protocol, latency_ms, device_id, cache_hit, input_hash, predicted, "
        "confidence, is_attack, score, is_anomaly, threshold FROM predictions "
        "ORDER BY request_key, row_index, shadow"
    )
    try:
        assert await upgrade(engine, schema=schema, revision="0006") == "0006"
        async with engine.begin() as conn:
            for record in records:
                await conn.execute(text(f"INSERT INTO predictions ({columns}) VALUES {record}"))
            before = [tuple(r) for r in (await conn.execute(query)).all()]
        assert len(before) == 4
        assert await upgrade(engine, schema=schema) == head_revision()
        async with engine.begin() as conn:
            assert [tuple(r) for r in (await conn.execute(query)).all()] == before
            counts = [
                (await conn.execute(text(f"SELECT COUNT(*) FROM {table}"))).scalar()
                for table in ("prediction_requests", "prediction_rows")
            ]
            assert counts == [3, 4]  # K1 served, K1 shadow, K2
        async with engine.begin() as conn:
            await conn.run_sync(lambda sync: command.downgrade(alembic_config(sync), "0006"))
        async with engine.connect() as conn:
            assert [tuple(r) for r in (await conn.execute(query)).all()] == before
            tables = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
            assert "predictions" in tables and "prediction_rows" not in tables
    finally:
        await engine.dispose()
