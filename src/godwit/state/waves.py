"""Waves: named groups of servers that cut over together. A server is in at most one wave (the
primary key of ``wave_members`` is the server), so two waves can never both migrate it."""

from __future__ import annotations

import time

from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from godwit.errors import ConflictError, NotFoundError
from godwit.state import schema as t
from godwit.state.views import WaveView


class Waves:
    """The waves and wave_members tables, on one unit of work's connection."""

    def __init__(self, c: Connection) -> None:
        self.c = c

    def _id(self, name: str) -> int | None:
        return self.c.execute(select(t.waves.c.id).where(t.waves.c.name == name)).scalar()

    def _members(self, wave_id: int) -> list[str]:
        rows = self.c.execute(select(t.servers.c.name).join(t.wave_members,
                                                            t.wave_members.c.server_id == t.servers.c.id)
                              .where(t.wave_members.c.wave_id == wave_id).order_by(t.wave_members.c.position))
        return [r.name for r in rows]

    def of_server(self, server_id: int) -> str | None:
        """The wave the server is in, if any."""
        return self.c.execute(select(t.waves.c.name).join(t.wave_members, t.wave_members.c.wave_id == t.waves.c.id)
                              .where(t.wave_members.c.server_id == server_id)).scalar()

    def create(self, name: str, server_ids: dict[str, int]) -> WaveView:
        """A new wave of the given servers (name → id, in order); refuses a server already in a wave."""
        if self._id(name) is not None:
            raise ConflictError(f"a wave named {name!r} already exists",
                                hint=f"`godwit wave remove {name}` first, or pick another name")
        for server, sid in server_ids.items():
            other = self.of_server(sid)
            if other is not None:
                raise ConflictError(f"server {server} is already in wave {other}",
                                    hint="a server is in at most one wave; remove that wave first")
        try:  # a concurrent create loses on a unique key; the unit then rolls back whole
            wid = self.c.execute(t.waves.insert().values(name=name, created=time.time())
                                 ).inserted_primary_key[0]  # type: ignore[index]
            for pos, sid in enumerate(server_ids.values()):
                self.c.execute(t.wave_members.insert().values(wave_id=wid, server_id=sid, position=pos))
        except IntegrityError:
            raise ConflictError(f"wave {name!r} or one of its servers was taken by another command") from None
        return self.get(name)

    def find(self, name: str) -> WaveView | None:
        r = self.c.execute(select(t.waves).where(t.waves.c.name == name)).first()
        if r is None:
            return None
        return WaveView(name=r.name, created=r.created, servers=self._members(r.id))

    def get(self, name: str) -> WaveView:
        w = self.find(name)
        if w is None:
            raise NotFoundError(f"no wave named {name!r}", hint="`godwit wave list` shows the waves")
        return w

    def all(self) -> list[WaveView]:
        rows = self.c.execute(select(t.waves).order_by(t.waves.c.name))
        return [WaveView(name=r.name, created=r.created, servers=self._members(r.id)) for r in rows]

    def remove(self, name: str) -> None:
        wid = self._id(name)
        if wid is None:
            raise NotFoundError(f"no wave named {name!r}")
        self.c.execute(t.wave_members.delete().where(t.wave_members.c.wave_id == wid))
        self.c.execute(t.waves.delete().where(t.waves.c.id == wid))

    def count(self) -> int:
        return int(self.c.execute(select(func.count()).select_from(t.waves)).scalar() or 0)
