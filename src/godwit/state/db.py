"""The state database and typed access to its rows."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from godwit.errors import NotFoundError, ProjectError
from godwit.state import schema as t


@dataclass(frozen=True)
class Server:
    id: int
    uid: str
    name: str
    state: str
    error: str | None


@dataclass(frozen=True)
class Disk:
    id: int
    server_id: int
    idx: int
    uid: str
    spec: str
    format: str
    size: int
    state: str
    error: str | None


@dataclass(frozen=True)
class Cycle:
    id: int
    server_id: int
    number: int
    kind: str
    state: str
    consistency: str | None
    started: float
    committed: float | None
    applied: float | None
    manifest_key: str | None
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    packs: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float


@dataclass(frozen=True)
class RecoveryPoint:
    id: int
    server_id: int
    number: int
    sealed: float
    consistency: str
    disk_sizes: list[int]
    state: str


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def _alembic_config(connection: Connection) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    cfg.attributes["connection"] = connection
    return cfg


#: The newest migration in ``migrations/versions`` (a test keeps the two in step). Checking it with
#: one query spares every command the cost of loading Alembic when nothing is to be done.
HEAD_REVISION = "0001"


def migrate(connection: Connection) -> None:
    """Bring the schema to this godwit's head revision; refuse a database from a newer godwit."""
    from sqlalchemy import inspect, text

    if inspect(connection).has_table("alembic_version") and connection.execute(
            text("SELECT version_num FROM alembic_version")).scalar() == HEAD_REVISION:
        return
    from alembic import command
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = _alembic_config(connection)
    script = ScriptDirectory.from_config(cfg)
    from alembic.util import CommandError

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


class StateDB:
    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            with self.engine.begin() as c:
                migrate(c)
        except OperationalError as exc:
            raise ProjectError(f"cannot open the state database: {exc.orig}") from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        with self.engine.begin() as c:
            yield c

    # -- servers and disks -------------------------------------------------------------------

    def servers(self) -> list[Server]:
        with self.tx() as c:
            return [Server(r.id, r.uid, r.name, r.state, r.error)
                    for r in c.execute(select(t.servers).order_by(t.servers.c.name))]

    def server(self, name: str) -> Server:
        with self.tx() as c:
            r = c.execute(select(t.servers).where(t.servers.c.name == name)).first()
        if r is None:
            raise NotFoundError(f"no server named {name!r}", hint="`godwit server list` shows the servers")
        return Server(r.id, r.uid, r.name, r.state, r.error)

    def set_server_state(self, server_id: int, state: str, error: str | None = None) -> None:
        with self.tx() as c:
            c.execute(t.servers.update().where(t.servers.c.id == server_id).values(state=state, error=error))

    def disks(self, server_id: int) -> list[Disk]:
        with self.tx() as c:
            rows = c.execute(select(t.disks).where(t.disks.c.server_id == server_id).order_by(t.disks.c.idx))
            return [Disk(r.id, r.server_id, r.idx, r.uid, r.spec, r.format, r.size, r.state, r.error)
                    for r in rows]

    def set_disk(self, disk_id: int, **values: Any) -> None:
        with self.tx() as c:
            c.execute(t.disks.update().where(t.disks.c.id == disk_id).values(**values))

    # -- cycles ------------------------------------------------------------------------------

    @staticmethod
    def _cycle(r: Any) -> Cycle:
        return Cycle(r.id, r.server_id, r.number, r.kind, r.state, r.consistency, r.started, r.committed,
                     r.applied, r.manifest_key, r.bytes_read or 0, r.bytes_changed or 0, r.bytes_sent or 0,
                     r.packs or 0, r.t_read or 0.0, r.t_cpu or 0.0, r.t_upload or 0.0, r.t_throttle or 0.0,
                     r.t_wall or 0.0)

    def cycles(self, server_id: int, states: tuple[str, ...] | None = None) -> list[Cycle]:
        q = select(t.cycles).where(t.cycles.c.server_id == server_id)
        if states:
            q = q.where(t.cycles.c.state.in_(states))
        with self.tx() as c:
            return [self._cycle(r) for r in c.execute(q.order_by(t.cycles.c.number))]

    def cycle(self, server_id: int, number: int) -> Cycle:
        with self.tx() as c:
            r = c.execute(select(t.cycles).where(t.cycles.c.server_id == server_id,
                                                 t.cycles.c.number == number)).first()
        if r is None:
            raise NotFoundError(f"cycle {number} does not exist")
        return self._cycle(r)

    def update_cycle(self, cycle_id: int, **values: Any) -> None:
        with self.tx() as c:
            c.execute(t.cycles.update().where(t.cycles.c.id == cycle_id).values(**values))

    # -- recovery points ---------------------------------------------------------------------

    def recovery_points(self, server_id: int, *, live_only: bool = True) -> list[RecoveryPoint]:
        q = select(t.recovery_points).where(t.recovery_points.c.server_id == server_id)
        if live_only:
            q = q.where(t.recovery_points.c.state == "live")
        with self.tx() as c:
            return [RecoveryPoint(r.id, r.server_id, r.number, r.sealed, r.consistency,
                                  json.loads(r.disk_sizes), r.state)
                    for r in c.execute(q.order_by(t.recovery_points.c.number))]

    # -- events ------------------------------------------------------------------------------

    def event(self, level: str, message: str, *, server: str | None = None, disk: int | None = None,
              cycle: int | None = None) -> None:
        with self.tx() as c:
            c.execute(t.events.insert().values(ts=time.time(), level=level, server=server, disk=disk,
                                               cycle=cycle, message=message))

    def events(self, server: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        q = select(t.events)
        if server:
            q = q.where(t.events.c.server == server)
        with self.tx() as c:
            rows = c.execute(q.order_by(t.events.c.id.desc()).limit(limit))
            return [dict(r._mapping) for r in rows]
