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


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("tenant")
        batch.drop_column("token_epoch")
