"""Audit log in two tables: what a request's rows share is stored once per request.

``predictions`` (26 columns, three indexes per row) becomes ``prediction_requests`` (one
record per answered request and version: when, who, which model version, with the
per-model and per-user indexes) and ``prediction_rows`` (one per scored row: input hash
and output, primary key only). ``predictions`` stays as a view joining them, with the
same columns, so every reader is unchanged. Existing records are moved.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

REQUEST_COLUMNS = (
    "request_key, shadow, created_at, request_id, principal, user_id, key_id, model, "
    "version, protocol, task, latency_ms, device_id, cache_hit"
)
ROW_COLUMNS = (
    "request_key, row_index, shadow, input_hash, predicted_class, predicted, confidence, "
    "probabilities, is_attack, score, is_anomaly, threshold, calibration_seen, inputs"
)
ALL_COLUMNS = (
    "request_key, row_index, shadow, created_at, request_id, principal, user_id, key_id, "
    "model, version, protocol, task, latency_ms, device_id, cache_hit, input_hash, "
    "predicted_class, predicted, confidence, probabilities, is_attack, score, is_anomaly, "
    "threshold, calibration_seen, inputs"
)
# The view of the models (mlgate.db.models.PREDICTIONS_VIEW_SQL), as of this revision.
VIEW_SQL = """
CREATE VIEW predictions AS
SELECT w.request_key, w.row_index, w.shadow, r.created_at, r.request_id, r.principal,
       r.user_id, r.key_id, r.model, r.version, r.protocol, r.task, r.latency_ms,
       r.device_id, r.cache_hit, w.input_hash, w.predicted_class, w.predicted,
       w.confidence, w.probabilities, w.is_attack, w.score, w.is_anomaly, w.threshold,
       w.calibration_seen, w.inputs
FROM prediction_rows AS w
JOIN prediction_requests AS r ON r.request_key = w.request_key AND r.shadow = w.shadow
"""


def _request_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("request_key", sa.String(26), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("principal", sa.String(40), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("key_id", sa.Integer(), nullable=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("protocol", sa.String(16), nullable=False),
        sa.Column("task", sa.String(16), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=True),
        sa.Column("cache_hit", sa.Boolean(), nullable=False),
    ]


def _row_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("request_key", sa.String(26), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("shadow", sa.Boolean(), nullable=False),
        sa.Column("input_hash", sa.String(32), nullable=False),
        sa.Column("predicted_class", sa.Integer(), nullable=True),
        sa.Column("predicted", sa.String(64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("probabilities", sa.JSON(), nullable=True),
        sa.Column("is_attack", sa.Boolean(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("is_anomaly", sa.Boolean(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("calibration_seen", sa.Integer(), nullable=True),
        sa.Column("inputs", sa.JSON(), nullable=True),
    ]


def upgrade() -> None:
    op.create_table(
        "prediction_requests",
        *_request_columns(),
        sa.PrimaryKeyConstraint("request_key", "shadow", name="pk_prediction_requests"),
    )
    op.create_index(
        "ix_prediction_requests_model_key", "prediction_requests", ["model", "request_key"]
    )
    op.create_index(
        "ix_prediction_requests_user_key", "prediction_requests", ["user_id", "request_key"]
    )
    op.create_table(
        "prediction_rows",
        *_row_columns(),
        sa.PrimaryKeyConstraint("request_key", "row_index", "shadow", name="pk_prediction_rows"),
    )
    # Each request's shared columns from its first row (they are equal on all its rows).
    op.execute(
        f"INSERT INTO prediction_requests ({REQUEST_COLUMNS}) "
        f"SELECT {REQUEST_COLUMNS} FROM predictions AS p WHERE p.row_index = ("
        "SELECT MIN(q.row_index) FROM predictions AS q "
        "WHERE q.request_key = p.request_key AND q.shadow = p.shadow)"
    )
    op.execute(f"INSERT INTO prediction_rows ({ROW_COLUMNS}) SELECT {ROW_COLUMNS} FROM predictions")
    op.drop_index("ix_predictions_user_key", table_name="predictions")
    op.drop_index("ix_predictions_model_key", table_name="predictions")
    op.drop_table("predictions")
    op.execute(VIEW_SQL)


def downgrade() -> None:
    op.execute("DROP VIEW predictions")
    op.execute(VIEW_SQL.replace("CREATE VIEW predictions", "CREATE VIEW predictions_v"))
    op.create_table(
        "predictions",
        *[c for c in _row_columns() if c.name in ("request_key", "row_index", "shadow")],
        *[c for c in _request_columns() if c.name not in ("request_key", "shadow")],
        *[c for c in _row_columns() if c.name not in ("request_key", "row_index", "shadow")],
        sa.PrimaryKeyConstraint("request_key", "row_index", "shadow", name="pk_predictions"),
    )
    op.create_index("ix_predictions_model_key", "predictions", ["model", "request_key"])
    op.create_index("ix_predictions_user_key", "predictions", ["user_id", "request_key"])
    op.execute(f"INSERT INTO predictions ({ALL_COLUMNS}) SELECT {ALL_COLUMNS} FROM predictions_v")
    op.execute("DROP VIEW predictions_v")
    op.drop_table("prediction_rows")
    op.drop_index("ix_prediction_requests_user_key", table_name="prediction_requests")
    op.drop_index("ix_prediction_requests_model_key", table_name="prediction_requests")
    op.drop_table("prediction_requests")
