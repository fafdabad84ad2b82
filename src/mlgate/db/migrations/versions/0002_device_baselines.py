"""Per-device baselines of anomaly models.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "device_baselines",
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("required", sa.Integer(), nullable=False),
        sa.Column("seen", sa.Integer(), nullable=False),
        sa.Column("sums", sa.JSON(), nullable=False),
        sa.Column("sumsq", sa.JSON(), nullable=False),
        sa.Column("mean", sa.JSON(), nullable=True),
        sa.Column("std", sa.JSON(), nullable=True),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("model", "device_id", name="pk_device_baselines"),
    )


def downgrade() -> None:
    op.drop_table("device_baselines")
