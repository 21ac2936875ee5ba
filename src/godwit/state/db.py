"""The state database: opening it (SQLite or PostgreSQL), units of work, and short helpers.

Every SQL statement lives in the repositories of this package (``servers``, ``cycle_rows``,
``points``, ``records``, ``events``); code above the state layer calls them inside a unit of work
(``db.unit()``) or through the one-statement helpers here, which each run their own unit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import URL, Engine
from sqlalchemy.exc import SQLAlchemyError

from godwit.errors import ProjectError
from godwit.state import holders, upgrade
from godwit.state.dberrors import Translator, damaged, sqlite_path
from godwit.state.models import Cycle, Disk, RecoveryPoint, Server
from godwit.state.unit import Unit
from godwit.state.upgrade import HEAD_REVISION, migrate
from godwit.state.urls import POSTGRESQL, parse, redact
from godwit.state.views import Event

__all__ = ["HEAD_REVISION", "Cycle", "Disk", "RecoveryPoint", "Server", "StateDB", "migrate"]

#: How long a statement waits for another process's lock before godwit says who holds it.
BUSY_TIMEOUT = 30.0


def _sqlite_pragmas(busy_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={busy_ms}")  # first: the others may wait for a lock
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return on_connect


def _application_name() -> str:
    """What pg_stat_activity shows for godwit's sessions, so a lock holder can be named."""
    return holders.me().command[:63]


class StateDB:
    """One project's state database.

    ``may_create`` is asked before a database without any godwit table is initialised: a project
    that already holds cache objects, replicas or block hashes must never get a fresh, empty state
    silently (its recovery points would be forgotten, and reused wrongly later).
    """

    def __init__(self, url: str, *, may_create: Callable[[], bool] | None = None,
                 busy_timeout: float = BUSY_TIMEOUT) -> None:
        self.sa_url: URL = parse(url)  # with its password: never print it
        self.url = redact(self.sa_url)  # safe to show
        self.busy_timeout = busy_timeout
        self._errors = Translator(self.sa_url, busy_timeout, self._pg_transactions)
        self.engine: Engine = self._make_engine()
        try:
            self._open(may_create)
        except BaseException:
            self.engine.dispose()
            raise

    def _make_engine(self) -> Engine:
        if self.sa_url.get_backend_name() == POSTGRESQL:
            ms = int(self.busy_timeout * 1000)
            return create_engine(self.sa_url, pool_pre_ping=True, connect_args={
                "application_name": _application_name(), "connect_timeout": 10,
                "options": f"-c lock_timeout={ms}"})
        engine = create_engine(self.sa_url)
        event.listen(engine, "connect", _sqlite_pragmas(int(self.busy_timeout * 1000)))
        return engine

    def _open(self, may_create: Callable[[], bool] | None) -> None:
        path = sqlite_path(self.sa_url)
        where = str(path) if path is not None else redact(self.sa_url)
        new_file = path is not None and (not path.exists() or path.stat().st_size == 0)
        if new_file and may_create is not None and not may_create():
            state = "missing" if not path or not path.exists() else "empty (0 bytes)"
            raise ProjectError(f"the state database {where} is {state}, but the project holds data (cache "
                               "objects, replicas or block hashes)",
                               hint="restore godwit.db from a backup; godwit will not start an empty state on "
                                    "top of existing replicas")
        try:
            with self.engine.begin() as c:
                if upgrade.current_revision(c) == HEAD_REVISION:
                    return
                if not new_file and may_create is not None and upgrade.is_empty(c) and not may_create():
                    raise ProjectError(f"the state database {where} holds no godwit state, but the project holds "
                                       "data (cache objects, replicas or block hashes)",
                                       hint="point [state] url at the project's database, or restore it")
            upgrade.upgrade(self.engine, path, wait=self.busy_timeout)
        except SQLAlchemyError as exc:
            raise self._errors.translate(exc) from None
        except ValueError as exc:  # e.g. the revision table holds garbage
            raise damaged(where, str(exc)) from None

    def _pg_transactions(self) -> list[holders.Holder]:
        """Other sessions of this database with a transaction open, oldest first."""
        out: list[holders.Holder] = []
        with self.engine.connect() as c:
            rows = c.execute(text(
                "SELECT pid, application_name, extract(epoch from xact_start) AS since FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL "
                "ORDER BY xact_start"))
            for r in rows:
                out.append(holders.Holder(int(r.pid), r.application_name or "?", float(r.since)))
        return out

    def close(self) -> None:
        self.engine.dispose()

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.sa_url.get_backend_name()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """A raw transaction; new code uses ``unit()`` and the repositories instead."""
        with self._errors.guard(), self.engine.begin() as c:
            yield c

    @contextmanager
    def unit(self) -> Iterator[Unit]:
        """One unit of work: committed when the block ends, rolled back if it raises."""
        with self._errors.guard(), self.engine.begin() as c:
            yield Unit(c)

    # -- one-statement helpers (each its own unit of work) --------------------------------------

    def servers(self) -> list[Server]:
        with self.unit() as u:
            return u.servers.all()

    def server(self, name: str) -> Server:
        with self.unit() as u:
            return u.servers.get(name)

    def set_server_state(self, server_id: int, state: str, error: str | None = None) -> None:
        with self.unit() as u:
            u.servers.set_state(server_id, state, error)

    def disks(self, server_id: int) -> list[Disk]:
        with self.unit() as u:
            return u.servers.disks(server_id)

    def set_disk(self, disk_id: int, **values: Any) -> None:
        with self.unit() as u:
            u.servers.set_disk(disk_id, **values)

    def cycles(self, server_id: int, states: tuple[str, ...] | None = None) -> list[Cycle]:
        with self.unit() as u:
            return u.cycles.for_server(server_id, states)

    def cycle(self, server_id: int, number: int) -> Cycle:
        with self.unit() as u:
            return u.cycles.get(server_id, number)

    def update_cycle(self, cycle_id: int, **values: Any) -> None:
        with self.unit() as u:
            u.cycles.update(cycle_id, **values)

    def recovery_points(self, server_id: int, *, live_only: bool = True) -> list[RecoveryPoint]:
        with self.unit() as u:
            return u.points.for_server(server_id, live_only=live_only)

    def event(self, level: str, message: str, *, server: str | None = None, disk: int | None = None,
              cycle: int | None = None) -> None:
        with self.unit() as u:
            u.events.add(level, message, server=server, disk=disk, cycle=cycle)

    def events(self, server: str | None = None, limit: int = 50) -> list[Event]:
        with self.unit() as u:
            return u.events.recent(server, limit)

