"""Read-only figures the service reports (its /metrics and API lists), each one query."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Connection, func, select

from godwit.state import schema as t


class MigrationView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: int
    kind: str
    recovery_point: int
    format: str
    out_dir: str
    files: list[str]
    created: float
    state: str


class Reports:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def migrations(self, server_id: int) -> list[MigrationView]:
        rows = self.c.execute(select(t.migrations).where(t.migrations.c.server_id == server_id)
                              .order_by(t.migrations.c.id))
        # A file entry may carry its inode stamp after a NUL (migrate.migration): only the path is shown.
        return [MigrationView(id=r.id, kind=r.kind, recovery_point=r.recovery_point, format=r.format,
                              out_dir=r.out_dir, files=[f.partition("\0")[0] for f in json.loads(r.files)],
                              created=r.created, state=r.state) for r in rows]

    def error_events(self) -> dict[str | None, int]:
        """How many error events each server (None: the project) has logged."""
        rows = self.c.execute(select(t.events.c.server, func.count()).where(t.events.c.level == "error")
                              .group_by(t.events.c.server))
        return {r[0]: int(r[1]) for r in rows}

    def cycles_by_state(self) -> dict[tuple[str, str], int]:
        rows = self.c.execute(select(t.servers.c.name, t.cycles.c.state, func.count())
                              .select_from(t.cycles.join(t.servers, t.cycles.c.server_id == t.servers.c.id))
                              .group_by(t.servers.c.name, t.cycles.c.state))
        return {(r[0], r[1]): int(r[2]) for r in rows}

    def bytes_sent(self) -> dict[str, int]:
        """Bytes every committed or applied cycle of a server sent to the cache store."""
        rows = self.c.execute(select(t.servers.c.name, func.coalesce(func.sum(t.cycles.c.bytes_sent), 0))
                              .select_from(t.cycles.join(t.servers, t.cycles.c.server_id == t.servers.c.id))
                              .where(t.cycles.c.state.in_(("committed", "applied")))
                              .group_by(t.servers.c.name))
        return {r[0]: int(r[1]) for r in rows}

    def oldest_unapplied(self) -> dict[str, float]:
        """Per server, when its oldest cycle waiting for the mover was committed."""
        rows = self.c.execute(select(t.servers.c.name, func.min(t.cycles.c.committed))
                              .select_from(t.cycles.join(t.servers, t.cycles.c.server_id == t.servers.c.id))
                              .where(t.cycles.c.state == "committed").group_by(t.servers.c.name))
        return {r[0]: float(r[1]) for r in rows if r[1] is not None}
