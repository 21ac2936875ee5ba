"""Servers and what hangs off them: disks, cycles, recovery points, migrations (read only)."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Depends, Path

from godwit.engine import lifecycle
from godwit.engine.cycle import bottleneck
from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import NAME, RecoveryPointView
from godwit.service.routers import API, AUTHED, errors
from godwit.state.reports import MigrationView, Reports
from godwit.state.views import CycleStatus, DiskStatus, ServerStatus

router = APIRouter(prefix=f"{API}/servers", tags=["servers"], responses={**AUTHED, **errors(404)})
ServerName = Path(pattern=NAME, max_length=63, examples=["web"])


def visible_status(project: Project, who: Principal, name: str) -> ServerStatus:
    who.check_server(name)
    return lifecycle.status(project, name)[0]


@router.get("")
def list_servers(who: Principal = Depends(require("reader", appliance=True)),
                 project: Project = Depends(project_of)) -> list[ServerStatus]:
    return [s for s in lifecycle.status(project) if who.sees(s.server)]


@router.get("/{name}")
def get_server(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
               project: Project = Depends(project_of)) -> ServerStatus:
    return visible_status(project, who, name)


@router.get("/{name}/disks")
def list_disks(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
               project: Project = Depends(project_of)) -> list[DiskStatus]:
    return visible_status(project, who, name).disks


@router.get("/{name}/cycles")
def list_cycles(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
                project: Project = Depends(project_of)) -> list[CycleStatus]:
    who.check_server(name)
    server = project.db.server(name)
    return [CycleStatus(**{k: v for k, v in asdict(c).items() if k not in ("id", "server_id", "manifest_key")},
                        bottleneck=bottleneck(c.t_read, c.t_cpu, c.t_upload, c.t_throttle))
            for c in project.db.cycles(server.id)]


@router.get("/{name}/recovery-points")
def list_recovery_points(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
                         project: Project = Depends(project_of)) -> list[RecoveryPointView]:
    who.check_server(name)
    server = project.db.server(name)
    return [RecoveryPointView(number=p.number, sealed=p.sealed, consistency=p.consistency, disk_sizes=p.disk_sizes)
            for p in project.db.recovery_points(server.id)]


@router.get("/{name}/migrations")
def list_migrations(name: str = ServerName, who: Principal = Depends(require("reader", appliance=True)),
                    project: Project = Depends(project_of)) -> list[MigrationView]:
    who.check_server(name)
    server = project.db.server(name)
    with project.db.unit() as u:
        return Reports(u.connection).migrations(server.id)
