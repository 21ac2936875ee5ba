"""Test migration, its cleanup, and planned migration (godwit.migrate), writing under the export dir.

Each runs as a background operation: the request answers 202 with it (routers/operations.py)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from godwit.service.auth import Principal, require
from godwit.service.models import OperationView, PlannedMigrationRequest, TestMigrationRequest
from godwit.service.routers import API, AUTHED, errors
from godwit.service.routers.operations import ACCEPTED, accepted
from godwit.service.routers.servers import ServerName

router = APIRouter(prefix=f"{API}/migrations", tags=["migrations"], responses={**AUTHED, **errors(400, 404, 409)})


@router.post("/{name}/test", status_code=202, response_model=OperationView, responses=ACCEPTED)
def test_migration(request: Request, body: TestMigrationRequest, name: str = ServerName,
                   _who: Principal = Depends(require("operator"))) -> JSONResponse:
    """Write the disks at a recovery point under the export directory; replication goes on."""
    return accepted(request, "test", name, body.model_dump())


@router.post("/{name}/cleanup", status_code=202, response_model=OperationView, responses=ACCEPTED)
def cleanup(request: Request, name: str = ServerName, _who: Principal = Depends(require("operator"))) -> JSONResponse:
    """Remove the files of the server's test migrations."""
    return accepted(request, "cleanup", name)


@router.post("/{name}/planned", status_code=202, response_model=OperationView, responses=ACCEPTED)
def planned_migration(request: Request, body: PlannedMigrationRequest, name: str = ServerName,
                      _who: Principal = Depends(require("operator"))) -> JSONResponse:
    """Final cycle, apply, write the disks, mark the server migrated (no shutdown command over the API)."""
    return accepted(request, "planned", name, body.model_dump())
