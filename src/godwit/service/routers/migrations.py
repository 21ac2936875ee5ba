"""Test migration, its cleanup, and planned migration (godwit.migrate), writing under the export dir."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path as FsPath

from fastapi import APIRouter, Depends, Request

from godwit.migrate import migration
from godwit.project.project import Project
from godwit.service.auth import Principal, project_of, require
from godwit.service.models import (
    CleanupResult,
    MigrationResultView,
    PlannedMigrationRequest,
    TestMigrationRequest,
)
from godwit.service.routers import API, AUTHED, errors
from godwit.service.routers.servers import ServerName

router = APIRouter(prefix=f"{API}/migrations", tags=["migrations"], responses={**AUTHED, **errors(400, 404, 409)})


def _out_dir(request: Request, name: str, kind: str, folder: str | None) -> FsPath:
    root: FsPath = request.app.state.settings.export_dir
    return root / (folder or f"{name}-{kind}-{int(time.time())}")


@router.post("/{name}/test")
def test_migration(request: Request, body: TestMigrationRequest, name: str = ServerName,
                   _who: Principal = Depends(require("operator")),
                   project: Project = Depends(project_of)) -> MigrationResultView:
    """Write the disks at a recovery point under the export directory; replication goes on."""
    project.db.server(name)  # an unknown server is a 404 before any folder is made
    with request.app.state.apply_gate:
        res = migration.test_migration(project, name, recovery_point=body.recovery_point, fmt=body.format,
                                       out_dir=_out_dir(request, name, "test", body.folder))
    return MigrationResultView(**asdict(res))


@router.post("/{name}/cleanup")
def cleanup(name: str = ServerName, _who: Principal = Depends(require("operator")),
            project: Project = Depends(project_of)) -> CleanupResult:
    """Remove the files of the server's test migrations."""
    return CleanupResult(removed=migration.cleanup(project, name))


@router.post("/{name}/planned")
def planned_migration(request: Request, body: PlannedMigrationRequest, name: str = ServerName,
                      _who: Principal = Depends(require("operator")),
                      project: Project = Depends(project_of)) -> MigrationResultView:
    """Final cycle, apply, write the disks, mark the server migrated (no shutdown command over the API)."""
    project.db.server(name)
    with request.app.state.apply_gate:
        res = migration.planned_migration(project, name, fmt=body.format,
                                          out_dir=_out_dir(request, name, "planned", body.folder))
    return MigrationResultView(**asdict(res))
