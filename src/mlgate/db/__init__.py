"""Storage: SQLAlchemy async engine, tables and the packaged Alembic migrations."""

from __future__ import annotations

from mlgate.db.engine import build_engine, safe_url, session_factory, sqlite_path
from mlgate.db.migrate import current_revision, head_revision, upgrade
from mlgate.db.models import ApiKey, Base, User

__all__ = [
    "ApiKey",
    "Base",
    "User",
    "build_engine",
    "current_revision",
    "head_revision",
    "safe_url",
    "session_factory",
    "sqlite_path",
    "upgrade",
]
