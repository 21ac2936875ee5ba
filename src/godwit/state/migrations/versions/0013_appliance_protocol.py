"""The appliance protocol: reported cycles, commands, progress, per-appliance settings.

New tables only: every existing row is kept as it is.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "appliance_cycles",
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("number", sa.Integer, primary_key=True),
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("received", sa.Float, nullable=False),
    )
    op.create_table(
        "appliance_commands",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE"), nullable=False),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("done", sa.Float),
        sa.Column("result", sa.Text),
    )
    op.create_table(
        "appliance_progress",
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("cycle", sa.Integer),
        sa.Column("bytes_done", sa.BigInteger, nullable=False),
        sa.Column("bytes_total", sa.BigInteger, nullable=False),
        sa.Column("throughput_bps", sa.Float),
        sa.Column("rpo_seconds", sa.Float),
        sa.Column("error", sa.Text),
        sa.Column("updated", sa.Float, nullable=False),
    )
    op.create_table(
        "appliance_settings",
        sa.Column("appliance_id", sa.Integer, sa.ForeignKey("appliances.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("interval_seconds", sa.Float),
        sa.Column("max_mbps", sa.Float),
        sa.Column("last_event", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in ("appliance_settings", "appliance_progress", "appliance_commands", "appliance_cycles"):
        op.drop_table(table)
