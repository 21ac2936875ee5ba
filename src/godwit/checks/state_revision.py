"""The state database: reachable, and at this godwit's Alembic schema revision — read-only.

Opening a project upgrades its schema; doctor never does. SQLite files are opened with
``mode=ro`` (a missing file is not created), PostgreSQL in a read-only transaction. The head
revision comes from the migrations shipped in ``godwit/state/migrations``.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from sqlalchemy import Connection, create_engine, func, inspect, select
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

import godwit.state
from godwit.checks.finding import Finding, failed, passed, warned
from godwit.errors import GodwitError
from godwit.state import urls

NAME = "state: database"
REVISION = "state: schema revision"
MIGRATIONS = Path(godwit.state.__file__).parent / "migrations"
CONNECT_TIMEOUT = 5
MAX_SKEW = 5.0  # seconds; more is worth a warning (Azure refuses requests beyond ~15 min)


def head_revisions() -> set[str]:
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory(str(MIGRATIONS)).get_heads())


def known_revision(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    try:
        return ScriptDirectory(str(MIGRATIONS)).get_revision(revision) is not None
    except CommandError:
        return False


def _readonly_engine(u: URL) -> Engine:
    if u.get_backend_name() == "sqlite":
        path = Path(u.database or "")
        # No -wal file: no connection has the database open (WAL mode keeps one while it does), so
        # read it as immutable and leave no -wal/-shm behind; otherwise read alongside the others.
        wal = path.with_name(path.name + "-wal")
        uri = path.resolve().as_uri() + ("?mode=ro" if wal.exists() else "?mode=ro&immutable=1")
        return create_engine("sqlite://", creator=lambda: sqlite3.connect(uri, uri=True))
    engine = create_engine(u, connect_args={"connect_timeout": CONNECT_TIMEOUT})
    return engine.execution_options(postgresql_readonly=True)


def _server_skew(c: Connection) -> float:
    """Seconds the database server's clock is ahead of ours: the one time source doctor reaches anyway."""
    t0 = time.time()
    theirs = c.execute(select(func.clock_timestamp())).scalar_one()
    return float(theirs.timestamp() - (t0 + time.time()) / 2)


def _skew_finding(skew: float) -> Finding:
    name = "clock: against the state server"
    if abs(skew) <= MAX_SKEW:
        return passed(name, f"PostgreSQL's clock is {skew:+.2f} s from ours")
    return warned(name, f"PostgreSQL's clock is {skew:+.1f} s from ours: one of the two is off",
                  "synchronise both machines' clocks (chrony or systemd-timesyncd)")


def check_state(url: str) -> list[Finding]:
    """Reach the database and compare its revision with the migrations' head."""
    try:
        u = urls.parse(url)  # the drivers and schemes godwit opens, as it opens them
    except GodwitError as exc:
        return [failed(NAME, exc.message, exc.hint or "fix [state] url in godwit.toml")]
    shown = urls.redact(u)
    if u.get_backend_name() == "sqlite":
        path = Path(u.database or "")
        if not path.exists():
            return [failed(NAME, f"no state database at {path}",
                           "if this project held servers, restore godwit.db from a backup; a new project "
                           "gets one from `godwit init`")]
        if path.stat().st_size == 0:
            return [failed(NAME, f"{path} is empty (0 bytes): its servers, cycles and recovery points are gone",
                           "restore godwit.db from a backup (godwit does not recreate it over a project's data)")]
    try:
        engine = _readonly_engine(u)
    except (SQLAlchemyError, ImportError) as exc:
        return [failed(NAME, f"cannot use {shown}: {exc}", "fix [state] url in godwit.toml")]
    from alembic.runtime.migration import MigrationContext

    try:
        with engine.connect() as c:
            has_version = inspect(c).has_table("alembic_version")
            tables = inspect(c).get_table_names()
            current = MigrationContext.configure(c).get_current_revision() if has_version else None
            skew = _server_skew(c) if u.get_backend_name() == "postgresql" else None
    except (SQLAlchemyError, sqlite3.Error) as exc:
        orig = " ".join(str(getattr(exc, "orig", None) or exc).split())  # drivers' messages span lines
        fix = ("restore godwit.db from a backup if it is damaged, or make it readable by this user"
               if u.get_backend_name() == "sqlite" else
               "check that the server runs and accepts this user from here, and [state] url in godwit.toml")
        return [failed(NAME, f"cannot read {shown}: {orig}", fix)]
    finally:
        engine.dispose()
    found = [passed(NAME, f"{shown} answers ({len(tables)} tables)")]
    if skew is not None:
        found.append(_skew_finding(skew))
    heads = head_revisions()
    head = ", ".join(sorted(heads))
    if current in heads:
        found.append(passed(REVISION, f"at {current}, this godwit's head"))
    elif current is None:
        detail = ("no schema revision recorded" + (" and no tables" if not tables else
                                                    f" but {len(tables)} tables: not a godwit database?"))
        found.append(failed(REVISION, detail, "point [state] url at this project's database, or restore it "
                            "from a backup"))
    elif known_revision(current):
        found.append(warned(REVISION, f"at {current}, older than this godwit's head {head}",
                            "back the database up: the next godwit command that opens the project upgrades it"))
    else:
        found.append(failed(REVISION, f"at {current}, which this godwit does not know (head {head}): made by a "
                            "newer godwit?", "use the godwit version that made it, or a newer one"))
    return found
