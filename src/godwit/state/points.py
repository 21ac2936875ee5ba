"""Recovery points: sealed replica states, live or released."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from godwit.state import schema as t
from godwit.state.models import RecoveryPoint, fits_int64


def _point(r: Any) -> RecoveryPoint:
    return RecoveryPoint(r.id, r.server_id, r.number, r.sealed, r.consistency, json.loads(r.disk_sizes), r.state)


class RecoveryPoints:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def for_server(self, server_id: int, *, live_only: bool = True) -> list[RecoveryPoint]:
        q = select(t.recovery_points).where(t.recovery_points.c.server_id == server_id)
        if live_only:
            q = q.where(t.recovery_points.c.state == "live")
        return [_point(r) for r in self.c.execute(q.order_by(t.recovery_points.c.number))]

    def find(self, server_id: int, number: int) -> RecoveryPoint | None:
        """Point ``number`` whether live or released."""
        if not fits_int64(number):
            return None
        r = self.c.execute(select(t.recovery_points).where(t.recovery_points.c.server_id == server_id,
                                                           t.recovery_points.c.number == number)).first()
        return _point(r) if r is not None else None

    def record(self, server_id: int, number: int, *, sealed: float, consistency: str, disk_sizes: list[int]) -> None:
        self.c.execute(t.recovery_points.insert().values(
            server_id=server_id, number=number, sealed=sealed, consistency=consistency,
            disk_sizes=json.dumps(disk_sizes), state="live"))

    def release(self, point_id: int) -> None:
        self.c.execute(t.recovery_points.update().where(t.recovery_points.c.id == point_id).values(state="released"))
