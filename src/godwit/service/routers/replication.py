"""Replication: its state per server, enable or stop it, run a cycle now (the engine's lifecycle)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Request

from godwit.engine import lifecycle
from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import CycleResultView, ReplicationChange, ReplicationView
from godwit.service.routers import API, AUTHED, errors
from godwit.service.routers.servers import ServerName, visible_status
from godwit.state.views import ServerStatus

router = APIRouter(prefix=f"{API}/replications", tags=["replications"], responses={**AUTHED, **errors(404)})


def _view(s: ServerStatus) -> ReplicationView:
    return ReplicationView(server=s.server, state=s.state, last_cycle=s.last_cycle, open_cycle=s.open_cycle,
                           rpo_seconds=s.rpo_seconds, latest_recovery_point=s.latest_recovery_point,
                           throughput_bps=s.throughput_bps)


@router.get("")
def list_replications(who: Principal = Depends(require("reader", appliance=True)),
                      project: Project = Depends(project_of)) -> list[ReplicationView]:
    return [_view(s) for s in lifecycle.status(project) if who.sees(s.server)]


@router.get("/{name}")
def get_replication(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
                    project: Project = Depends(project_of)) -> ReplicationView:
    return _view(visible_status(project, who, name))


@router.put("/{name}", responses=errors(409))
def change_replication(request: Request, body: ReplicationChange, name: str = ServerName,
                       who: Principal = Depends(require("operator")),
                       project: Project = Depends(project_of)) -> ReplicationView:
    """Enable replication (the initial cycle runs now if none is committed) or stop it."""
    if body.enabled:
        with request.app.state.progress.tracking(name) as progress:
            lifecycle.start(project, name, progress=progress)
    else:
        lifecycle.stop(project, name)
    return _view(visible_status(project, who, name))


@router.post("/{name}/cycles", responses=errors(409, 503))
def run_cycle(request: Request, name: str = ServerName, who: Principal = Depends(require("operator", appliance=True)),
              project: Project = Depends(project_of)) -> CycleResultView:
    """Run one cycle of the server now; it returns when the cycle is committed."""
    who.check_server(name)
    with request.app.state.progress.tracking(name) as progress:
        return CycleResultView(**asdict(lifecycle.cycle(project, name, progress=progress)))
