"""Replication: its state per server, enable or stop it, run a cycle now (the engine's lifecycle;
the long ones as background operations)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from godwit.engine import lifecycle
from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import OperationView, ReplicationChange, ReplicationView
from godwit.service.routers import API, AUTHED, errors
from godwit.service.routers.operations import ACCEPTED, accepted
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


@router.put("/{name}", response_model=None, responses={200: {"model": ReplicationView}, **ACCEPTED})
def change_replication(request: Request, body: ReplicationChange, name: str = ServerName,
                       who: Principal = Depends(require("operator")),
                       project: Project = Depends(project_of)) -> ReplicationView | JSONResponse:
    """Enable replication: 202 and an operation that runs the initial cycle if none is committed.
    Stop it: 200 and the replication's state (nothing long to wait for)."""
    if body.enabled:
        return accepted(request, "enable", name)
    lifecycle.stop(project, name)
    return _view(visible_status(project, who, name))


@router.post("/{name}/cycles", status_code=202, response_model=OperationView, responses=ACCEPTED)
def run_cycle(request: Request, name: str = ServerName, who: Principal = Depends(require("operator", appliance=True))
              ) -> JSONResponse:
    """Run one cycle of the server now, in the background: 202 and the operation to follow."""
    who.check_server(name)
    return accepted(request, "cycle", name)
