"""Scheduled cutovers: a planned migration of a server or a wave at a given time. A row is claimed
(``scheduled`` → ``running``) by one conditional update, so two loops never run the same cutover,
and it can be cancelled only while it is still ``scheduled``."""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Connection, select

from godwit.errors import ConflictError, NotFoundError
from godwit.state import schema as t
from godwit.state.views import CutoverView


def _view(r: Any) -> CutoverView:
    return CutoverView(id=r.id, target=r.target, target_kind=r.target_kind, at=r.at, options=json.loads(r.options),
                       state=r.state, created=r.created, result=json.loads(r.result) if r.result else None)


class Cutovers:
    def __init__(self, c: Connection) -> None:
        self.c = c

    def add(self, target: str, target_kind: str, at: float, options: dict[str, Any]) -> CutoverView:
        cid = self.c.execute(t.cutovers.insert().values(
            target=target, target_kind=target_kind, at=at, options=json.dumps(options), state="scheduled",
            created=time.time())).inserted_primary_key[0]  # type: ignore[index]
        return self.get(int(cid))

    def get(self, cutover_id: int) -> CutoverView:
        r = self.c.execute(select(t.cutovers).where(t.cutovers.c.id == cutover_id)).first()
        if r is None:
            raise NotFoundError(f"no scheduled cutover {cutover_id}", hint="`godwit migrate scheduled` lists them")
        return _view(r)

    def all(self, *, pending_only: bool = False) -> list[CutoverView]:
        q = select(t.cutovers)
        if pending_only:
            q = q.where(t.cutovers.c.state.in_(("scheduled", "running")))
        return [_view(r) for r in self.c.execute(q.order_by(t.cutovers.c.at, t.cutovers.c.id))]

    def pending_for(self, target: str, target_kind: str) -> list[CutoverView]:
        return [c for c in self.all(pending_only=True) if c.target == target and c.target_kind == target_kind]

    def due(self, now: float) -> list[CutoverView]:
        rows = self.c.execute(select(t.cutovers).where(t.cutovers.c.state == "scheduled", t.cutovers.c.at <= now)
                              .order_by(t.cutovers.c.at, t.cutovers.c.id))
        return [_view(r) for r in rows]

    def claim(self, cutover_id: int) -> bool:
        """``scheduled`` → ``running``; False if another process claimed or cancelled it first."""
        res = self.c.execute(t.cutovers.update().where(t.cutovers.c.id == cutover_id,
                                                       t.cutovers.c.state == "scheduled").values(state="running"))
        return res.rowcount == 1

    def finish(self, cutover_id: int, state: str, result: dict[str, Any]) -> None:
        self.c.execute(t.cutovers.update().where(t.cutovers.c.id == cutover_id)
                       .values(state=state, result=json.dumps(result)))

    def cancel(self, cutover_id: int) -> CutoverView:
        c = self.get(cutover_id)
        res = self.c.execute(t.cutovers.update().where(t.cutovers.c.id == cutover_id,
                                                       t.cutovers.c.state == "scheduled").values(state="cancelled"))
        if res.rowcount != 1:
            raise ConflictError(f"cutover {cutover_id} of {c.target} is {c.state}; only a scheduled one can be "
                                "cancelled")
        return self.get(cutover_id)
