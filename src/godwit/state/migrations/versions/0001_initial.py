"""The first schema: servers, disks, cycles, cycle_disks, journal, recovery_points, migrations,
events, meta.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("meta", sa.Column("key", sa.String(64), primary_key=True),
                    sa.Column("value", sa.Text, nullable=False))
    op.create_table(
        "servers",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created", sa.Float, nullable=False),
    )
    op.create_table(
        "disks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("idx", sa.Integer, nullable=False),
        sa.Column("uid", sa.String(32), nullable=False, unique=True),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text),
        sa.UniqueConstraint("server_id", "idx"),
    )
    op.create_table(
        "cycles",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("consistency", sa.String(8)),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("committed", sa.Float),
        sa.Column("applied", sa.Float),
        sa.Column("manifest_key", sa.Text),
        *[sa.Column(n, sa.BigInteger) for n in ("bytes_read", "bytes_changed", "bytes_sent")],
        sa.Column("packs", sa.Integer),
        *[sa.Column(n, sa.Float) for n in ("t_read", "t_cpu", "t_upload", "t_throttle", "t_wall")],
        sa.UniqueConstraint("server_id", "number"),
    )
    op.create_table(
        "cycle_disks",
        sa.Column("cycle_id", sa.Integer, sa.ForeignKey("cycles.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("disk_id", sa.Integer, sa.ForeignKey("disks.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        *[sa.Column(n, sa.BigInteger) for n in ("bytes_read", "bytes_changed", "bytes_sent")],
        sa.Column("extents", sa.Integer),
    )
    op.create_table(
        "journal",
        sa.Column("cycle_id", sa.Integer, sa.ForeignKey("cycles.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("pack_id", sa.String(32), primary_key=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "recovery_points",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("sealed", sa.Float, nullable=False),
        sa.Column("consistency", sa.String(8), nullable=False),
        sa.Column("disk_sizes", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.UniqueConstraint("server_id", "number"),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("ts", sa.Float, nullable=False),
        sa.Column("level", sa.String(8), nullable=False),
        sa.Column("server", sa.String(64)),
        sa.Column("disk", sa.Integer),
        sa.Column("cycle", sa.Integer),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_table(
        "migrations",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("server_id", sa.Integer, sa.ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("recovery_point", sa.Integer, nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("out_dir", sa.Text, nullable=False),
        sa.Column("files", sa.Text, nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )


def downgrade() -> None:
    for table in ("migrations", "events", "recovery_points", "journal", "cycle_disks", "cycles", "disks",
                  "servers", "meta"):
        op.drop_table(table)
