"""The enforcement log of throttle and blackout windows: one row per occurrence a process watched,
with the bytes the store wrapper counted in it and whether it was kept."""

from __future__ import annotations

from sqlalchemy import Connection, select

from godwit.state import schema as t
from godwit.state.views import WindowLogEntry


class WindowLog:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def add(self, *, window: str, scope: str, kind: str, cap_mbps: float | None, started: float, ended: float,
            nbytes: int, busy_seconds: float, max_mbps: float, kept: bool) -> None:
        self.c.execute(t.window_log.insert().values(
            window=window, scope=scope, kind=kind, cap_mbps=cap_mbps, started=started, ended=ended, bytes=nbytes,
            busy_seconds=busy_seconds, max_mbps=max_mbps, kept=int(kept)))

    def since(self, ts: float | None = None, limit: int = 500) -> list[WindowLogEntry]:
        q = select(t.window_log)
        if ts is not None:
            q = q.where(t.window_log.c.ended >= ts)
        rows = list(self.c.execute(q.order_by(t.window_log.c.started.desc(), t.window_log.c.id.desc()).limit(limit)))
        return [WindowLogEntry(
            window=r.window, scope=r.scope, kind=r.kind, cap_mbps=r.cap_mbps, started=r.started, ended=r.ended,
            bytes=r.bytes, busy_seconds=r.busy_seconds, max_mbps=r.max_mbps,
            avg_mbps=(r.bytes * 8 / r.busy_seconds / 1e6) if r.busy_seconds > 0 else 0.0,
            kept=bool(r.kept)) for r in reversed(rows)]
