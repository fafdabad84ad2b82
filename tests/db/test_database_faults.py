"""The SQLite file under a real `mlgate serve`: created private, and when it is deleted or
read-only, readiness says so (503 naming the database) and writes are a clear 503 —
never a silent success, never a 500."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.servers import clean_env, mlgate_serve

pytestmark = pytest.mark.slow

KEY_PATTERN = re.compile(r"mlg_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def bootstrap_key(log: Path) -> str:
    keys = KEY_PATTERN.findall(log.read_text())
    assert keys, log.read_text()
    return keys[0]


def create_key(url: str, admin_key: str, name: str) -> dict:
    response = httpx.post(
        f"{url}/v1/admin/api-keys",
        json={"username": "admin", "name": name},
        headers={"X-API-Key": admin_key},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def read_only(path: Path) -> Iterator[None]:
    """``path`` write-protected for the server: chmod for a normal user; root ignores
    modes, so for root the file is made immutable (chattr +i), or the test is skipped."""
    if os.geteuid() != 0:
        os.chmod(path, 0o400)
        try:
            yield
        finally:
            os.chmod(path, 0o600)
        return
    result = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    if result.returncode != 0:
        pytest.skip(f"cannot make a file read-only for root here: {result.stderr!r}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_the_database_file_is_private_when_its_directory_exists(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir()
    os.chmod(tmp_path / "var", 0o755)  # an existing, world-readable directory
    with mlgate_serve(tmp_path, clean_env()):
        database = tmp_path / "var" / "mlgate.db"
        files = [database, *(Path(f"{database}{s}") for s in ("-wal", "-shm"))]
        assert {f.name: oct(mode(f)) for f in files if f.exists()} == {
            f.name: oct(0o600) for f in files if f.exists()
        }
        assert database.exists()


def test_a_deleted_sqlite_file_is_a_503_for_readiness_and_writes(tmp_path: Path) -> None:
    with mlgate_serve(tmp_path, clean_env()) as running:
        admin = {"X-API-Key": bootstrap_key(running.log)}
        victim = create_key(running.url, admin["X-API-Key"], "victim")
        database = tmp_path / "var" / "mlgate.db"
        database.unlink()  # an operator's accident

        ready = httpx.get(f"{running.url}/health/ready", timeout=10)
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert error["details"]["checks"]["database"] == "missing"
        assert "database file is missing" in error["message"]

        revoke = httpx.delete(
            f"{running.url}/v1/admin/api-keys/{victim['id']}", headers=admin, timeout=10
        )
        assert revoke.status_code == 503, revoke.text  # not a revocation into a deleted file
        assert "Retry-After" in revoke.headers
        assert not database.exists()  # not silently re-created empty


def test_a_read_only_database_is_a_503_for_readiness_and_revocations(tmp_path: Path) -> None:
    env = clean_env()
    with mlgate_serve(tmp_path, env) as running:
        admin = {"X-API-Key": bootstrap_key(running.log)}
        victim = create_key(running.url, admin["X-API-Key"], "victim")
    with (
        read_only(tmp_path / "var" / "mlgate.db"),
        mlgate_serve(tmp_path, env, ready_path="/health/live") as running,
    ):
        ready = httpx.get(f"{running.url}/health/ready", timeout=10)
        assert ready.status_code == 503
        error = ready.json()["error"]
        assert error["details"]["checks"]["database"] == "read_only"
        assert "database is read-only" in error["message"]

        revoke = httpx.delete(
            f"{running.url}/v1/admin/api-keys/{victim['id']}", headers=admin, timeout=10
        )
        assert revoke.status_code == 503, revoke.text
        assert revoke.json()["error"]["code"] == "database_unavailable"
        assert "nothing was stored" in revoke.json()["error"]["message"]
        # Not revoked, and the caller was told so: the key still works.
        still = httpx.get(
            f"{running.url}/v1/models", headers={"X-API-Key": victim["key"]}, timeout=10
        )
        assert still.status_code == 200
