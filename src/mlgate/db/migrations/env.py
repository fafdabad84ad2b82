"""Alembic environment: run only through :func:`mlgate.db.migrate.upgrade` (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from mlgate.db.models import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("mlgate migrations run through `mlgate db upgrade`, not the alembic CLI")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things: batch mode rebuilds the table instead.
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
