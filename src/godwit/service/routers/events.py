"""The event log."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import NAME
from godwit.service.routers import API, AUTHED
from godwit.state.views import Event

router = APIRouter(prefix=f"{API}/events", tags=["events"], responses=AUTHED)


@router.get("")
def list_events(server: str | None = Query(None, pattern=NAME, max_length=63),
                limit: int = Query(50, ge=1, le=1000),
                who: Principal = Depends(require("reader", appliance=True)),
                project: Project = Depends(project_of)) -> list[Event]:
    """The newest events, newest first (an appliance sees its servers' events only)."""
    if server is not None and not who.sees(server):
        return []
    rows = project.db.events(server, limit)
    return [e for e in rows if e.server is not None and who.sees(e.server)] if who.servers is not None else rows
