"""Audit log: the rows of a multi-row request stored as one block.

A request of many rows wrote one ``prediction_rows`` record per row: ~5 µs of the
server's CPU per row on SQLite, so a server answering 1,000-row requests could record
only about one in eight of them. ``prediction_row_blocks`` holds a run of consecutive
rows of one request as one record: the rows' own columns as a JSON array of arrays
(:data:`BLOCK_COLUMNS` order; the JSON columns as nested arrays), the first
row's index, and how many rows it holds. The ``predictions`` view unnests the blocks
beside the one-row records, with the same columns and types, so every reader is
unchanged. Nothing is moved on upgrade; a downgrade unnests the blocks into rows.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

#: The columns of each row of a block, in the order of its JSON array.
BLOCK_COLUMNS = (
    "input_hash",
    "predicted_class",
    "predicted",
    "confidence",
    "probabilities",
    "is_attack",
    "score",
    "is_anomaly",
    "threshold",
    "calibration_seen",
    "inputs",
)

_REQUEST_PART = (
    "r.created_at, r.request_id, r.principal, r.user_id, r.key_id, r.model, r.version, "
    "r.protocol, r.task, r.latency_ms, r.device_id, r.cache_hit"
)
_ROW_PART = (
    "w.input_hash, w.predicted_class, w.predicted, w.confidence, w.probabilities, "
    "w.is_attack, w.score, w.is_anomaly, w.threshold, w.calibration_seen, w.inputs"
)
# The view of 0007: one record per row.
ROWS_SQL = f"""
SELECT w.request_key, w.row_index, w.shadow, {_REQUEST_PART}, {_ROW_PART}
FROM prediction_rows AS w
JOIN prediction_requests AS r ON r.request_key = w.request_key AND r.shadow = w.shadow
"""

# How each dialect reads element i of a block's row (``e.value``) as the row column.
_PG_TYPES = {
    "input_hash": "varchar(32)",
    "predicted_class": "integer",
    "predicted": "varchar(64)",
    "confidence": "double precision",
    "probabilities": "json",
    "is_attack": "boolean",
    "score": "double precision",
    "is_anomaly": "boolean",
    "threshold": "double precision",
    "calibration_seen": "integer",
    "inputs": "json",
}


def blocks_sql(dialect: str) -> str:
    """The rows of the blocks, with the columns of :data:`ROWS_SQL`."""
    if dialect == "postgresql":
        # ->> gives an element as text (SQL NULL for JSON null), cast to the row type;
        # the JSON columns' arrays are taken as JSON (a JSON null as SQL NULL).
        cells = ", ".join(
            f"NULLIF((e.value -> {i})::text, 'null')::json AS {c}"
            if _PG_TYPES[c] == "json"
            else f"(e.value ->> {i})::{_PG_TYPES[c]} AS {c}"
            for i, c in enumerate(BLOCK_COLUMNS)
        )
        return f"""
SELECT b.request_key, (b.first_row + e.n - 1)::integer AS row_index, b.shadow,
       {_REQUEST_PART}, {cells}
FROM prediction_row_blocks AS b
JOIN prediction_requests AS r ON r.request_key = b.request_key AND r.shadow = b.shadow
CROSS JOIN LATERAL json_array_elements(b.data) WITH ORDINALITY AS e(value, n)
"""
    # SQLite: json_extract gives strings as text, arrays as their JSON text (how the
    # JSON columns are stored), numbers as numbers, true/false as 1/0 (how Boolean
    # columns are stored), null as NULL.
    cells = ", ".join(
        f"json_extract(e.value, '$[{i}]') AS {c}" for i, c in enumerate(BLOCK_COLUMNS)
    )
    return f"""
SELECT b.request_key, b.first_row + e.key AS row_index, b.shadow, {_REQUEST_PART}, {cells}
FROM prediction_row_blocks AS b
JOIN prediction_requests AS r ON r.request_key = b.request_key AND r.shadow = b.shadow
JOIN json_each(b.data) AS e
"""


def view_sql(dialect: str) -> str:
    return f"CREATE VIEW predictions AS {ROWS_SQL} UNION ALL {blocks_sql(dialect)}"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.create_table(
        "prediction_row_blocks",
        sa.Column("request_key", sa.String(26), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("first_row", sa.Integer(), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint(
            "request_key", "shadow", "first_row", name="pk_prediction_row_blocks"
        ),
    )
    op.execute("DROP VIEW predictions")
    op.execute(view_sql(dialect))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    columns = f"request_key, row_index, shadow, {', '.join(BLOCK_COLUMNS)}"
    op.execute(
        f"INSERT INTO prediction_rows ({columns}) SELECT {columns} FROM "
        f"({blocks_sql(dialect)}) AS unnested"
    )
    op.execute("DROP VIEW predictions")
    op.drop_table("prediction_row_blocks")
    op.execute(f"CREATE VIEW predictions AS {ROWS_SQL}")
