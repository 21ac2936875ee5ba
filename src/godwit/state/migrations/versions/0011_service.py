"""The service: appliances, appliance_servers, tokens.

Revision ID: 0011
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "appliances",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("registered", sa.Float, nullable=False),
        sa.Column("last_seen", sa.Float),
    )
    op.create_table(
        "appliance_servers",
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("project", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE")),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("expires", sa.Float),
        sa.Column("revoked", sa.Float),
    )


def downgrade() -> None:
    for table in ("tokens", "appliance_servers", "appliances"):
        op.drop_table(table)
