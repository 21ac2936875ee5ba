"""Appliances: the on-premises machines that replicate servers and talk to the service.

Each appliance is registered once with the project's registration key and is limited to the
servers listed for it; its own token (role ``appliance``) sees and acts on those servers only.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, select

from godwit.errors import ConflictError, NotFoundError
from godwit.state import schema as t


class ApplianceView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    name: str
    registered: float
    last_seen: float | None
    servers: list[str]


class Appliances:
    """The appliances and appliance_servers tables, on one unit of work's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    def _servers(self, appliance_id: int) -> list[str]:
        rows = self.c.execute(select(t.servers.c.name).select_from(
            t.appliance_servers.join(t.servers, t.appliance_servers.c.server_id == t.servers.c.id))
            .where(t.appliance_servers.c.appliance_id == appliance_id).order_by(t.servers.c.name))
        return [r.name for r in rows]

    def _view(self, r: Any) -> ApplianceView:
        return ApplianceView(id=r.id, name=r.name, registered=r.registered, last_seen=r.last_seen,
                             servers=self._servers(r.id))

    def all(self) -> list[ApplianceView]:
        return [self._view(r) for r in self.c.execute(select(t.appliances).order_by(t.appliances.c.name))]

    def find(self, name: str) -> ApplianceView | None:
        r = self.c.execute(select(t.appliances).where(t.appliances.c.name == name)).first()
        return self._view(r) if r is not None else None

    def by_id(self, appliance_id: int) -> ApplianceView:
        r = self.c.execute(select(t.appliances).where(t.appliances.c.id == appliance_id)).first()
        if r is None:
            raise NotFoundError(f"no appliance with id {appliance_id}")
        return self._view(r)

    def register(self, name: str, server_ids: list[int]) -> ApplianceView:
        """Create the appliance, or take over the existing one of that name, with these servers."""
        existing = self.find(name)
        if existing is None:
            aid = int(self.c.execute(t.appliances.insert().values(name=name, registered=time.time()))
                      .inserted_primary_key[0])  # type: ignore[index]
        else:
            aid = existing.id
            self.c.execute(t.appliances.update().where(t.appliances.c.id == aid).values(registered=time.time()))
            self.c.execute(t.appliance_servers.delete().where(t.appliance_servers.c.appliance_id == aid))
        for sid in sorted(set(server_ids)):
            self.c.execute(t.appliance_servers.insert().values(appliance_id=aid, server_id=sid))
        return self.by_id(aid)

    def unregister(self, name: str) -> tuple[ApplianceView, list[str]]:
        """Forget the appliance: its tokens, servers, commands, progress and settings go with it
        (the tables' foreign keys cascade). Its servers that were replicating are stopped, not
        taken over: the service may not reach their disks. Returns the appliance as it was and the
        names of the servers stopped here."""
        a = self.find(name)
        if a is None:
            raise NotFoundError(f"no appliance named {name!r}", hint="`godwit appliance list` lists them")
        stopped: list[str] = []
        for sname in a.servers:
            r = self.c.execute(select(t.servers.c.id, t.servers.c.state).where(t.servers.c.name == sname)).one()
            if r.state in ("replicating", "paused"):
                self.c.execute(t.servers.update().where(t.servers.c.id == r.id).values(state="stopped", error=None))
                stopped.append(sname)
        # Revoked first, so that a token is refused even where the cascade is not enforced.
        self.c.execute(t.tokens.update().where(t.tokens.c.appliance_id == a.id, t.tokens.c.revoked.is_(None))
                       .values(revoked=time.time()))
        self.c.execute(t.appliances.delete().where(t.appliances.c.id == a.id))
        return a, stopped

    def heartbeat(self, appliance_id: int) -> ApplianceView:
        self.c.execute(t.appliances.update().where(t.appliances.c.id == appliance_id).values(last_seen=time.time()))
        return self.by_id(appliance_id)


# -- on the appliance: its own state mirrors the service's servers, uids included ---------------

def mirror_server(c: Connection, name: str, uid: str, disks: list[tuple[int, str, str, str, int]],
                  floor: int | None = None) -> int:
    """Make the appliance's local server ``name`` the service's (same uid, same disks by uid).

    ``disks``: (index, uid, spec, format, size). Cache keys and block-hash files are named by these
    uids, so a local server of the same name with another uid is another history: refused.
    ``floor``: the highest cycle number the service has; a local history below it (a new or
    replaced appliance) gets a ``discarded`` placeholder there, so the next local cycle is numbered
    above it (and, with nothing committed here, is a full one). Returns the local server id.
    """
    r = c.execute(select(t.servers).where(t.servers.c.name == name)).first()
    if r is None:
        sid = int(c.execute(t.servers.insert().values(uid=uid, name=name, state="added", created=time.time()))
                  .inserted_primary_key[0])  # type: ignore[index]
    elif r.uid != uid:
        raise ConflictError(f"this appliance's server {name} (uid {r.uid}) is not the service's (uid {uid})",
                            hint=f"remove it here (`godwit server remove {name}`) to replicate the service's")
    else:
        sid = int(r.id)
    have = {row.idx: row for row in c.execute(select(t.disks).where(t.disks.c.server_id == sid))}
    for idx, duid, spec, fmt, size in disks:
        d = have.get(idx)
        if d is None:
            c.execute(t.disks.insert().values(server_id=sid, idx=idx, uid=duid, spec=spec, format=fmt, size=size,
                                              state="ok"))
        elif d.uid != duid:
            raise ConflictError(f"disk {idx} of this appliance's server {name} is not the service's disk")
        elif d.spec != spec or d.format != fmt:
            c.execute(t.disks.update().where(t.disks.c.id == d.id).values(spec=spec, format=fmt))
    if floor:
        last = c.execute(select(func.max(t.cycles.c.number)).where(t.cycles.c.server_id == sid)).scalar()
        if last is None:
            c.execute(t.cycles.insert().values(server_id=sid, number=floor, kind="initial", state="discarded",
                                               started=time.time()))
    return sid


def events_after(c: Connection, last: int, levels: tuple[str, ...], limit: int = 500) -> list[dict[str, Any]]:
    """The appliance's own events after id ``last``, oldest first (to forward to the service)."""
    rows = c.execute(select(t.events).where(t.events.c.id > last, t.events.c.level.in_(levels))
                     .order_by(t.events.c.id).limit(limit))
    return [dict(r._mapping) for r in rows]
