"""The cycle rows that the mover, resync and status read and change.

(The cycle engine's own writes — opening a cycle, journaling packs, committing — are in ``cycles``.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from godwit.errors import NotFoundError
from godwit.state import schema as t
from godwit.state.models import Cycle, CycleDisk, fits_int64


def cycle_from_row(r: Any) -> Cycle:
    return Cycle(r.id, r.server_id, r.number, r.kind, r.state, r.consistency, r.started, r.committed,
                 r.applied, r.manifest_key, r.bytes_read or 0, r.bytes_changed or 0, r.bytes_sent or 0,
                 r.packs or 0, r.t_read or 0.0, r.t_cpu or 0.0, r.t_upload or 0.0, r.t_throttle or 0.0,
                 r.t_wall or 0.0)


class CycleRows:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def for_server(self, server_id: int, states: tuple[str, ...] | None = None) -> list[Cycle]:
        q = select(t.cycles).where(t.cycles.c.server_id == server_id)
        if states:
            q = q.where(t.cycles.c.state.in_(states))
        return [cycle_from_row(r) for r in self.c.execute(q.order_by(t.cycles.c.number))]

    def get(self, server_id: int, number: int) -> Cycle:
        if not fits_int64(number):
            raise NotFoundError(f"cycle {number} does not exist")
        r = self.c.execute(select(t.cycles).where(t.cycles.c.server_id == server_id,
                                                  t.cycles.c.number == number)).first()
        if r is None:
            raise NotFoundError(f"cycle {number} does not exist")
        return cycle_from_row(r)

    def update(self, cycle_id: int, **values: Any) -> None:
        self.c.execute(t.cycles.update().where(t.cycles.c.id == cycle_id).values(**values))

    def forget_manifest(self, cycle_id: int) -> None:
        """The cycle's cache objects are released: nothing of it is left in the store."""
        self.update(cycle_id, manifest_key=None)

    def mark_applied(self, cycle_id: int, at: float) -> None:
        self.update(cycle_id, state="applied", applied=at)

    def journaled_packs(self, cycle_ids: list[int]) -> list[str]:
        """The pack ids the journals of these (open) cycles name."""
        if not cycle_ids:
            return []
        rows = self.c.execute(select(t.journal.c.pack_id).where(t.journal.c.cycle_id.in_(cycle_ids)))
        return [r.pack_id for r in rows]

    def discard(self, cycle_id: int) -> None:
        """Resync: the cycle will never be applied; its journal goes with it."""
        self.c.execute(t.journal.delete().where(t.journal.c.cycle_id == cycle_id))
        self.update(cycle_id, state="discarded")

    def disk_rows(self, cycle_ids: list[int]) -> list[CycleDisk]:
        """Per-disk figures of these cycles."""
        if not cycle_ids:
            return []
        rows = self.c.execute(select(t.cycle_disks).where(t.cycle_disks.c.cycle_id.in_(cycle_ids)))
        return [CycleDisk(r.cycle_id, r.disk_id, r.size, r.bytes_read or 0, r.bytes_changed or 0,
                          r.bytes_sent or 0, r.extents or 0) for r in rows]
