"""Prediction audit log, ground-truth feedback, daily usage counters (and the ids of the
usage increments already added).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("request_key", sa.String(26), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
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
        sa.PrimaryKeyConstraint("request_key", "row_index", "shadow", name="pk_predictions"),
    )
    op.create_index("ix_predictions_model_key", "predictions", ["model", "request_key"])
    op.create_index("ix_predictions_user_key", "predictions", ["user_id", "request_key"])
    op.create_table(
        "prediction_feedback",
        sa.Column("request_key", sa.String(26), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(64), nullable=True),
        sa.Column("is_anomaly", sa.Boolean(), nullable=True),
        sa.Column("labelled_by", sa.String(40), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("request_key", "row_index", name="pk_prediction_feedback"),
    )
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("principal", sa.String(40), nullable=False),
        sa.Column("tier", sa.String(32), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("refusals", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("day", "principal", "tier", "model", name="pk_usage_daily"),
    )
    op.create_index("ix_usage_daily_user_id", "usage_daily", ["user_id"])
    op.create_table(
        "usage_flushes",
        sa.Column("flush_id", sa.String(32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("flush_id", name="pk_usage_flushes"),
    )


def downgrade() -> None:
    op.drop_table("usage_flushes")
    op.drop_index("ix_usage_daily_user_id", table_name="usage_daily")
    op.drop_table("usage_daily")
    op.drop_table("prediction_feedback")
    op.drop_index("ix_predictions_user_key", table_name="predictions")
    op.drop_index("ix_predictions_model_key", table_name="predictions")
    op.drop_table("predictions")
