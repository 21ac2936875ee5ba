"""Servers and their disks."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.exc import IntegrityError

from godwit.errors import ConflictError, NotFoundError
from godwit.state import schema as t
from godwit.state.models import Disk, Server

#: The ``meta`` key prefix of a cycle's kept settings (``state.cycles._settings_key``).
CYCLE_SETTINGS_PREFIX = "cycle-settings/"


@dataclass(frozen=True)
class NewDisk:
    spec: str
    format: str
    size: int


def _server(r: Any) -> Server:
    return Server(r.id, r.uid, r.name, r.state, r.error)


def _disk(r: Any) -> Disk:
    return Disk(r.id, r.server_id, r.idx, r.uid, r.spec, r.format, r.size, r.state, r.error)


class Servers:
    """The servers and disks tables, on one unit of work's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    def all(self) -> list[Server]:
        return [_server(r) for r in self.c.execute(select(t.servers).order_by(t.servers.c.name))]

    def find(self, name: str) -> Server | None:
        r = self.c.execute(select(t.servers).where(t.servers.c.name == name)).first()
        return _server(r) if r is not None else None

    def get(self, name: str) -> Server:
        s = self.find(name)
        if s is None:
            raise NotFoundError(f"no server named {name!r}", hint="`godwit server list` shows the servers")
        return s

    def add(self, name: str, disks: list[NewDisk]) -> Server:
        """A new server in state ``added`` with its disks in order, each with a fresh uid."""
        if self.find(name) is not None:
            raise ConflictError(f"a server named {name!r} already exists",
                                hint="pick another name, or `godwit server remove` the old one")
        try:  # a concurrent add of the same name loses here; the unit then rolls back whole
            sid = self.c.execute(t.servers.insert().values(
                uid=secrets.token_hex(8), name=name, state="added", created=time.time())
            ).inserted_primary_key[0]  # type: ignore[index]
            for idx, d in enumerate(disks):
                self.c.execute(t.disks.insert().values(server_id=sid, idx=idx, uid=secrets.token_hex(8),
                                                       spec=d.spec, format=d.format, size=d.size, state="ok"))
        except IntegrityError:
            raise ConflictError(f"a server named {name!r} already exists") from None
        return self.get(name)

    def remove(self, server_id: int) -> None:
        """The server and everything that hangs off it (the foreign keys cascade: disks, cycles,
        journal, recovery points, migration records)."""
        # Kept settings of its cycles are keyed by cycle id in `meta` (state.cycles), which no foreign
        # key covers; SQLite reuses ids, so a later cycle would collide with a stale key.
        ids = [r.id for r in self.c.execute(select(t.cycles.c.id).where(t.cycles.c.server_id == server_id))]
        if ids:
            self.c.execute(t.meta.delete().where(t.meta.c.key.in_([f"{CYCLE_SETTINGS_PREFIX}{i}" for i in ids])))
        self.c.execute(t.servers.delete().where(t.servers.c.id == server_id))

    def set_state(self, server_id: int, state: str, error: str | None = None) -> None:
        self.c.execute(t.servers.update().where(t.servers.c.id == server_id).values(state=state, error=error))

    def disks(self, server_id: int) -> list[Disk]:
        rows = self.c.execute(select(t.disks).where(t.disks.c.server_id == server_id).order_by(t.disks.c.idx))
        return [_disk(r) for r in rows]

    def set_disk(self, disk_id: int, **values: Any) -> None:
        self.c.execute(t.disks.update().where(t.disks.c.id == disk_id).values(**values))

    def flag_disks(self, server_id: int, error: str) -> None:
        """Every disk of the server in error: replication and the mover stop until it is cleared."""
        self.c.execute(t.disks.update().where(t.disks.c.server_id == server_id).values(state="error", error=error))

    def clear_disk_errors(self, server_id: int) -> None:
        self.c.execute(t.disks.update().where(t.disks.c.server_id == server_id, t.disks.c.state != "ok")
                       .values(state="ok", error=None))
