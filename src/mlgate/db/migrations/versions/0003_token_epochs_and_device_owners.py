"""Token epochs and tenants of users; owners of device baselines, and device shares.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01

Baselines stored before this revision belonged to nobody (any caller could calibrate or
read any device id). They are kept, under the owner ``unowned`` that no caller is: an
admin can read them (``?owner=unowned``), hand one to its real owner with a device share
(``PUT /v1/admin/device-shares/{grantee}/{device_id}`` with ``{"owner": "unowned"}``),
or leave the devices to calibrate again under their owners.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UNOWNED = "unowned"


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("token_epoch", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("tenant", sa.String(64), nullable=True))
    # Existing rows get the owner nobody is; SQLite's batch mode copies the table to
    # change its primary key, PostgreSQL alters it in place.
    with op.batch_alter_table("device_baselines") as batch:
        batch.add_column(sa.Column("owner", sa.String(80), nullable=False, server_default=UNOWNED))
        batch.drop_constraint("pk_device_baselines", type_="primary")
        batch.create_primary_key("pk_device_baselines", ["owner", "model", "device_id"])
    with op.batch_alter_table("device_baselines") as batch:
        batch.alter_column("owner", existing_type=sa.String(80), server_default=None)
    op.create_table(
        "device_shares",
        sa.Column("grantee", sa.String(80), nullable=False),
        sa.Column("device_id", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(80), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grantee", "device_id", name="pk_device_shares"),
    )
    op.create_index("ix_device_shares_owner", "device_shares", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_device_shares_owner", table_name="device_shares")
    op.drop_table("device_shares")
    # Devices of different owners may share an id: keep one row per (model, device_id).
    op.execute(
        "DELETE FROM device_baselines WHERE owner <> 'unowned' AND EXISTS ("
        "SELECT 1 FROM device_baselines AS other WHERE other.model = device_baselines.model "
        "AND other.device_id = device_baselines.device_id AND other.owner < device_baselines.owner)"
    )
    with op.batch_alter_table("device_baselines") as batch:
        batch.drop_constraint("pk_device_baselines", type_="primary")
        batch.create_primary_key("pk_device_baselines", ["model", "device_id"])
        batch.drop_column("owner")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tenant")
        batch.drop_column("token_epoch")
