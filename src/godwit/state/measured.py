"""What godwit measured, for the planner: per server its committed cycles' figures, the churn
history per hour of day, and the predictions `godwit plan` made (to review them later)."""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import Connection, select

from godwit.state import schema as t
from godwit.state.cycle_rows import cycle_from_row
from godwit.state.models import Cycle
from godwit.state.views import ChurnHour, Prediction


class Measured:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def committed_cycles(self, server_id: int | None = None) -> list[Cycle]:
        """Committed or applied cycles (of one server, or all), oldest first: the measurements."""
        q = select(t.cycles).where(t.cycles.c.state.in_(("committed", "applied")))
        if server_id is not None:
            q = q.where(t.cycles.c.server_id == server_id)
        return [cycle_from_row(r) for r in self.c.execute(q.order_by(t.cycles.c.started))]

    def churn_by_hour(self, server_id: int, hour_of: Callable[[float], int]) -> list[ChurnHour]:
        """Churn of delta and final cycles by the hour of day each started in (``hour_of`` maps a
        timestamp to the configured zone's hour), so that a daily pattern shows."""
        hours = {h: [0, 0, 0.0] for h in range(24)}
        prev: float | None = None
        for c in self.committed_cycles(server_id):
            if c.kind != "initial" and prev is not None:
                h = hours[hour_of(c.started)]
                h[0] += c.bytes_changed
                h[1] += 1
                h[2] += c.started - prev  # the time that churn accumulated over
            prev = c.started
        return [ChurnHour(hour=h, bytes_changed=int(v[0]), cycles=int(v[1]),
                          bytes_per_second=(v[0] / v[2]) if v[2] > 0 else None) for h, v in hours.items()]

    def record_prediction(self, server_id: int, *, initial_bytes: int, initial_seconds: float | None,
                          final_seconds: float | None, link_mbps: float) -> None:
        self.c.execute(t.plan_predictions.insert().values(
            server_id=server_id, made=time.time(), initial_bytes=initial_bytes, initial_seconds=initial_seconds,
            final_seconds=final_seconds, link_mbps=link_mbps))

    def predictions(self, server_id: int) -> list[Prediction]:
        rows = self.c.execute(select(t.plan_predictions).where(t.plan_predictions.c.server_id == server_id)
                              .order_by(t.plan_predictions.c.made))
        return [Prediction(made=r.made, initial_bytes=r.initial_bytes, initial_seconds=r.initial_seconds,
                           final_seconds=r.final_seconds, link_mbps=r.link_mbps) for r in rows]
