"""Schema upgrades with Alembic, one process at a time.

Opening a project upgrades an older database in place and refuses one from a newer godwit. Two
processes opening one database at once (an appliance loop and a mover) must not both run the
upgrade: on PostgreSQL a transaction-scoped advisory lock serialises them, on SQLite an exclusive
``flock`` on a lock file beside the database (never on the database file itself: closing any
descriptor of it drops SQLite's own POSIX locks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, inspect, text
from sqlalchemy.engine import Engine

from godwit.errors import ProjectError
from godwit.state.locks import file_lock
from godwit.state.schema import metadata

#: The newest migration in ``migrations/versions`` (a test keeps the two in step). Checking it with
#: one query spares every command the cost of loading Alembic when nothing is to be done.
HEAD_REVISION = "0014"

#: pg_advisory_xact_lock key of schema upgrades ("godwit" in ASCII).
PG_UPGRADE_LOCK = 0x676F64776974


def current_revision(connection: Connection) -> str | None:
    if not inspect(connection).has_table("alembic_version"):
        return None
    rev = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return str(rev) if rev is not None else None


def is_empty(connection: Connection) -> bool:
    """No godwit table at all: a database godwit has never written."""
    names = set(inspect(connection).get_table_names())
    return not (names & ({"alembic_version"} | set(metadata.tables)))


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


def migrate(connection: Connection) -> None:
    """Bring the schema to this godwit's head revision; refuse a database from a newer godwit.

    The caller holds the upgrade lock (see ``upgrade``) and commits the transaction.
    """
    if current_revision(connection) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    cfg = _alembic_config(connection)
    script = ScriptDirectory.from_config(cfg)
    current = MigrationContext.configure(connection).get_current_revision()
    try:
        known = current is None or script.get_revision(current) is not None
    except CommandError:
        known = False
    if not known:
        raise ProjectError(f"the state database is at schema revision {current}, which this godwit does not "
                           "know (made by a newer godwit?)", hint="use the godwit version that made it, or newer")
    if current != script.get_current_head():
        command.upgrade(cfg, "head")


def upgrade(engine: Engine, sqlite_file: Path | None, *, wait: float) -> None:
    """Run ``migrate`` under the upgrade lock, in one transaction; wait up to ``wait`` seconds for
    another process's upgrade (PostgreSQL: its lock_timeout)."""
    with _file_lock(sqlite_file, wait), engine.begin() as c:
        if c.dialect.name == "postgresql":  # held until this transaction ends
            c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": PG_UPGRADE_LOCK})
        migrate(c)


@contextmanager
def _file_lock(sqlite_file: Path | None, wait: float) -> Iterator[None]:
    if sqlite_file is None:  # PostgreSQL, or in-memory SQLite (one connection, nobody to race)
        yield
        return
    with file_lock(sqlite_file.with_name(sqlite_file.name + ".upgrade-lock"),
                   f"a schema upgrade of {sqlite_file}", wait=wait):
        yield
