"""Tables of the state database. Every change here comes with an Alembic revision in
``migrations/versions`` (tests/unit/test_state_migrations.py checks that they agree)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

meta = Table("meta", metadata, Column("key", String(64), primary_key=True), Column("value", Text, nullable=False))

servers = Table(
    "servers", metadata,
    Column("id", Integer, primary_key=True),
    Column("uid", String(32), nullable=False, unique=True),
    Column("name", String(64), nullable=False, unique=True),
    # added | replicating | paused | stopped | migrated
    Column("state", String(16), nullable=False),
    Column("error", Text),
    Column("created", Float, nullable=False),
)

disks = Table(
    "disks", metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("uid", String(32), nullable=False, unique=True),
    Column("spec", Text, nullable=False),
    Column("format", String(16), nullable=False),
    Column("size", BigInteger, nullable=False),
    # ok | error (replication paused for this disk's server until fixed)
    Column("state", String(16), nullable=False, default="ok"),
    Column("error", Text),
    UniqueConstraint("server_id", "idx"),
)

cycles = Table(
    "cycles", metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("kind", String(8), nullable=False),  # initial | delta | final
    # open | committed | applied | failed
    Column("state", String(16), nullable=False),
    Column("consistency", String(8)),
    Column("started", Float, nullable=False),
    Column("committed", Float),
    Column("applied", Float),
    Column("manifest_key", Text),
    Column("bytes_read", BigInteger, default=0),
    Column("bytes_changed", BigInteger, default=0),
    Column("bytes_sent", BigInteger, default=0),
    Column("packs", Integer, default=0),
    Column("t_read", Float, default=0.0),
    Column("t_cpu", Float, default=0.0),
    Column("t_upload", Float, default=0.0),
    Column("t_throttle", Float, default=0.0),
    Column("t_wall", Float, default=0.0),
    UniqueConstraint("server_id", "number"),
)

cycle_disks = Table(
    "cycle_disks", metadata,
    Column("cycle_id", Integer, ForeignKey("cycles.id", ondelete="CASCADE"), primary_key=True),
    Column("disk_id", Integer, ForeignKey("disks.id", ondelete="CASCADE"), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("bytes_read", BigInteger, default=0),
    Column("bytes_changed", BigInteger, default=0),
    Column("bytes_sent", BigInteger, default=0),
    Column("extents", Integer, default=0),
)

# The resume journal: packs of an open cycle that are durably stored, with what they hold.
journal = Table(
    "journal", metadata,
    Column("cycle_id", Integer, ForeignKey("cycles.id", ondelete="CASCADE"), primary_key=True),
    Column("pack_id", String(32), primary_key=True),
    Column("size", BigInteger, nullable=False),
    Column("payload", LargeBinary, nullable=False),
)

recovery_points = Table(
    "recovery_points", metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("sealed", Float, nullable=False),
    Column("consistency", String(8), nullable=False),
    Column("disk_sizes", Text, nullable=False),  # JSON list, disk order
    Column("state", String(16), nullable=False),  # live | released
    UniqueConstraint("server_id", "number"),
)

events = Table(
    "events", metadata,
    Column("id", Integer, primary_key=True),
    Column("ts", Float, nullable=False),
    Column("level", String(8), nullable=False),
    Column("server", String(64)),
    Column("disk", Integer),
    Column("cycle", Integer),
    Column("message", Text, nullable=False),
)

migrations = Table(
    "migrations", metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(8), nullable=False),  # test | planned
    Column("recovery_point", Integer, nullable=False),
    Column("format", String(8), nullable=False),
    Column("out_dir", Text, nullable=False),
    Column("files", Text, nullable=False),  # JSON list of paths written
    Column("created", Float, nullable=False),
    Column("state", String(16), nullable=False),  # done | cleaned
)

# The service (revision 0011): appliances, the servers each one replicates, and API tokens.
appliances = Table(
    "appliances", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("registered", Float, nullable=False),
    Column("last_seen", Float),
)

appliance_servers = Table(
    "appliance_servers", metadata,
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE"), primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
)

# Only a SHA-256 digest of each secret is kept (tokens are 256-bit random: no slow hash needed).
tokens = Table(
    "tokens", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False),
    Column("project", String(64), nullable=False),
    Column("role", String(16), nullable=False),  # reader | operator | admin | appliance
    Column("digest", String(64), nullable=False, unique=True),
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE")),
    Column("created", Float, nullable=False),
    Column("expires", Float),
    Column("revoked", Float),
)

# Waves (revision 0012): groups of servers that cut over together; a server is in at most one.
waves = Table(
    "waves", metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created", Float, nullable=False),
)

wave_members = Table(
    "wave_members", metadata,
    Column("wave_id", Integer, ForeignKey("waves.id", ondelete="CASCADE"), nullable=False),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, nullable=False),
)

# The enforcement log of throttle and blackout windows: one row per window occurrence, with the
# rate the store wrapper measured inside it.
window_log = Table(
    "window_log", metadata,
    Column("id", Integer, primary_key=True),
    Column("window", String(64), nullable=False),  # "08:00-18:00 Europe/Berlin"
    Column("scope", String(80), nullable=False),  # all | server:NAME | wave:NAME
    Column("kind", String(8), nullable=False),  # cap | blackout
    Column("cap_mbps", Float),
    Column("started", Float, nullable=False),
    Column("ended", Float),
    Column("bytes", BigInteger, nullable=False),
    Column("busy_seconds", Float, nullable=False),
    Column("max_mbps", Float, nullable=False),
    Column("kept", Integer),  # 1 | 0 | NULL while open
)

# Scheduled cutovers: a planned migration of a server or a wave at a given time.
cutovers = Table(
    "cutovers", metadata,
    Column("id", Integer, primary_key=True),
    Column("target", String(64), nullable=False),
    Column("target_kind", String(8), nullable=False),  # server | wave
    Column("at", Float, nullable=False),
    Column("options", Text, nullable=False),  # JSON: out, format, shutdown_command, parallel
    Column("state", String(16), nullable=False),  # scheduled | running | done | failed | cancelled
    Column("created", Float, nullable=False),
    Column("result", Text),
)

# What `godwit plan` predicted, per server, so that `plan --review` can compare it with what happened.
plan_predictions = Table(
    "plan_predictions", metadata,
    Column("id", Integer, primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("made", Float, nullable=False),
    Column("initial_bytes", BigInteger, nullable=False),  # to send
    Column("initial_seconds", Float),  # NULL: never finishes under the schedule
    Column("final_seconds", Float),
    Column("link_mbps", Float, nullable=False),
)

# The appliance protocol (revision 0013). A reported cycle is a row of `cycles` like any other (the
# mover applies it); `appliance_cycles` keeps who reported it and the digest of the report, so a
# resend is recognised and a different report under the same number is refused.
appliance_cycles = Table(
    "appliance_cycles", metadata,
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("number", Integer, primary_key=True),
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE"), nullable=False),
    Column("digest", String(64), nullable=False),  # SHA-256 of the report's canonical JSON
    Column("received", Float, nullable=False),
)

# Commands for an appliance, which it pulls (the service never connects to it).
appliance_commands = Table(
    "appliance_commands", metadata,
    Column("id", Integer, primary_key=True),
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE"), nullable=False),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # cycle | stop | resync | final
    Column("created", Float, nullable=False),
    Column("done", Float),
    Column("result", Text),
)

# The latest progress an appliance reported per server (a running cycle's bytes, throughput, RPO).
appliance_progress = Table(
    "appliance_progress", metadata,
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE"), primary_key=True),
    Column("server_id", Integer, ForeignKey("servers.id", ondelete="CASCADE"), primary_key=True),
    Column("cycle", Integer),
    Column("bytes_done", BigInteger, nullable=False),
    Column("bytes_total", BigInteger, nullable=False),
    Column("throughput_bps", Float),
    Column("rpo_seconds", Float),
    Column("error", Text),
    Column("updated", Float, nullable=False),
)

# Per appliance: the desired interval and throttle (NULL: the project's), and the id of the last of
# its events the service has stored (events are forwarded in order, at least once).
appliance_settings = Table(
    "appliance_settings", metadata,
    Column("appliance_id", Integer, ForeignKey("appliances.id", ondelete="CASCADE"), primary_key=True),
    Column("interval_seconds", Float),
    Column("max_mbps", Float),
    Column("last_event", BigInteger, nullable=False, default=0),
)

# The service's long operations (revision 0014): enable, cycle, test, cleanup, planned, run in the
# background; a row left queued or running by a service that died is marked failed at its next start.
operations = Table(
    "operations", metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(16), nullable=False),  # enable | cycle | test | cleanup | planned
    Column("server", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # queued | running | succeeded | failed
    Column("progress", Float),  # 0..1, stored when it ends (live from memory while it runs)
    Column("params", Text, nullable=False),  # JSON: the request's body
    Column("result", Text),  # JSON: the typed result
    Column("error", Text),  # JSON: error, hint, type, exit_code
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
)
