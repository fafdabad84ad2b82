"""A server that does not use Redis, webhooks or PostgreSQL does not import their
libraries at start (redis-py, httpx and the PostgreSQL dialect cost ~0.2 s together)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
import mlgate.api.app, mlgate.cli.main
from mlgate.api.app import create_app
from mlgate.settings import Settings
create_app(Settings(_env_file=None))
print(sorted(m for m in ("redis", "httpx", "asyncpg", "sqlalchemy.dialects.postgresql")
             if m in sys.modules))
"""


def test_the_app_imports_no_backend_it_does_not_use() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
    # asyncpg stays: the audit sink names its errors (PostgreSQL's COPY path).
    assert done.stdout.strip().splitlines()[-1] == "['asyncpg']"
