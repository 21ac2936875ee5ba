"""Waves and their members, the window enforcement log, scheduled cutovers, plan predictions.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "waves",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "wave_members",
        sa.Column("wave_id", sa.Integer, sa.ForeignKey("waves.id", ondelete="CASCADE"), nullable=False),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
    )
    op.create_table(
        "window_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("window", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(80), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("cap_mbps", sa.Float),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("ended", sa.Float),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("busy_seconds", sa.Float, nullable=False),
        sa.Column("max_mbps", sa.Float, nullable=False),
        sa.Column("kept", sa.Integer),
    )
    op.create_table(
        "cutovers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("target_kind", sa.String(8), nullable=False),
        sa.Column("at", sa.Float, nullable=False),
        sa.Column("options", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("result", sa.Text),
    )
    op.create_table(
        "plan_predictions",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("made", sa.Float, nullable=False),
        sa.Column("initial_bytes", sa.BigInteger, nullable=False),
        sa.Column("initial_seconds", sa.Float),
        sa.Column("final_seconds", sa.Float),
        sa.Column("link_mbps", sa.Float, nullable=False),
    )


def downgrade() -> None:
    for table in ("plan_predictions", "cutovers", "window_log", "wave_members", "waves"):
        op.drop_table(table)
