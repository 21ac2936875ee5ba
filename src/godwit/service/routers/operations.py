"""The service's background operations: what a `202 Accepted` points at, followed until it ends."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from godwit.errors import NotFoundError
from godwit.service.auth import Principal, require
from godwit.service.models import NAME, OperationView
from godwit.service.operations import Operations, submit
from godwit.service.routers import API, AUTHED, errors

router = APIRouter(prefix=f"{API}/operations", tags=["operations"], responses=AUTHED)

#: The OpenAPI answers of a request that starts an operation.
ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": OperationView, "description": "started; follow the "
                                                   "operation at its Location"}, **errors(404, 409, 503)}


def accepted(request: Request, kind: str, server: str, params: dict[str, Any] | None = None) -> JSONResponse:
    """Submit the operation; answer 202 with it and its Location."""
    op = submit(request.app.state, kind, server, params)
    return JSONResponse(op.model_dump(mode="json"), status_code=202,
                        headers={"Location": f"{API}/operations/{op.id}"})


def _ops(request: Request) -> Operations:
    ops: Operations = request.app.state.operations
    return ops


@router.get("")
def list_operations(request: Request, server: str | None = Query(None, pattern=NAME, max_length=63),
                    limit: int = Query(50, ge=1, le=1000),
                    who: Principal = Depends(require("reader", appliance=True))) -> list[OperationView]:
    """The newest operations, newest first (an appliance sees its servers' only)."""
    if server is not None and not who.sees(server):
        return []
    return [o for o in _ops(request).list(server, limit) if who.sees(o.server)]


@router.get("/{op_id}", responses=errors(404))
def get_operation(request: Request, op_id: int = Path(ge=1, le=2**62),
                  who: Principal = Depends(require("reader", appliance=True))) -> OperationView:
    op = _ops(request).get(op_id)
    if not who.sees(op.server):
        raise NotFoundError(f"no operation {op_id}", hint="GET /api/v1/operations lists them")  # as unknown
    return op
