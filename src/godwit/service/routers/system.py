"""/healthz (no token: a load balancer asks it) and /metrics (any valid token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import RedirectResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from godwit import __version__
from godwit.service.auth import Principal, require
from godwit.service.models import Health
from godwit.service.routers import AUTHED

router = APIRouter(tags=["system"])


@router.get("/", include_in_schema=False)
def root() -> RedirectResponse:
    return RedirectResponse("/ui", status_code=303)


@router.get("/healthz")
def healthz() -> Health:
    return Health(status="ok", version=__version__)


@router.get("/metrics", responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **AUTHED},
            response_class=Response)
def metrics(request: Request, _who: Principal = Depends(require("reader"))) -> Response:
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)
