"""The event log: cycles committed, errors, warnings."""

from __future__ import annotations

import time

from sqlalchemy import Connection, select

from godwit.errors import UsageError
from godwit.state import schema as t
from godwit.state.models import INT64_MAX
from godwit.state.views import Event


class Events:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def add(self, level: str, message: str, *, server: str | None = None, disk: int | None = None,
            cycle: int | None = None) -> None:
        self.c.execute(t.events.insert().values(ts=time.time(), level=level, server=server, disk=disk,
                                                cycle=cycle, message=message))

    def recent(self, server: str | None = None, limit: int = 50) -> list[Event]:
        """The newest ``limit`` events, newest first."""
        if limit < 1:
            raise UsageError(f"the number of events to show must be at least 1, not {limit}")
        limit = min(limit, INT64_MAX)  # more than any log holds: the same answer, and a valid LIMIT
        q = select(t.events)
        if server:
            q = q.where(t.events.c.server == server)
        rows = self.c.execute(q.order_by(t.events.c.id.desc()).limit(limit))
        return [Event.model_validate(dict(r._mapping)) for r in rows]
