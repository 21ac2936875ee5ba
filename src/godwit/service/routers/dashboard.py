"""The dashboard's pages (`/ui`): sign in with a token kept in an HttpOnly cookie, the servers'
page, and its live updates as server-sent events. The cookie is accepted on these
routes alone; an action is asked for on a confirmation page and done by a POST carrying a key
derived from the session's token, which a cross-site page cannot know."""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from godwit.engine import lifecycle
from godwit.errors import GodwitError
from godwit.project.project import Project
from godwit.service.app import status_of
from godwit.service.auth import RANK, project_of
from godwit.service.dashboard import actions, page
from godwit.service.operations import submit
from godwit.service.progress import LiveProgress
from godwit.service.routers.servers import ServerName
from godwit.state.network import NetworkRecords
from godwit.state.tokens import Tokens, TokenView

router = APIRouter(prefix="/ui", include_in_schema=False)
COOKIE = "godwit_token"
#: Seconds between two updates of the stream.
INTERVAL = 1.0
#: Seconds between two updates of an operation's page.
OP_INTERVAL = 0.5
#: How many recent events the page lists.
EVENTS = 20


def _who(request: Request, project: Project) -> TokenView | None:
    with project.db.unit() as u:
        token = Tokens(u.connection).authenticate(request.cookies.get(COOKIE), project.config.name)
    return token if token is not None and token.role != "appliance" else None


@router.get("/login")
def login_form(project: Project = Depends(project_of)) -> HTMLResponse:
    return HTMLResponse(page.login(project.config.name))


@router.post("/login")
async def login(request: Request, project: Project = Depends(project_of)) -> Response:
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    secret = (form.get("token") or [""])[0].strip()
    with project.db.unit() as u:
        token = Tokens(u.connection).authenticate(secret, project.config.name)
    if token is None or token.role == "appliance":
        return HTMLResponse(page.login(project.config.name, failed=True), status_code=401)
    response = RedirectResponse("/ui", status_code=303)
    response.set_cookie(COOKIE, secret, httponly=True, samesite="strict", secure=request.url.scheme == "https",
                        path="/ui")
    return response


@router.get("")
def dashboard(request: Request, project: Project = Depends(project_of)) -> Response:
    who = _who(request, project)
    if who is None:
        return RedirectResponse("/ui/login", status_code=303)
    return HTMLResponse(page.dashboard(project.config.name, lifecycle.status(project), project.db.events(None, EVENTS),
                                       actions=RANK[who.role] >= RANK["operator"], data_path=data_path(project),
                                       network_check=network_check(project)))


def data_path(project: Project) -> str:
    """The path the cache store's requests take, as the network plane decides it (read once per page:
    deciding may resolve names)."""
    if project.config.cache.kind != "azure":
        return "a local folder (no network)"
    url = project.config.cache.options.get("account_url")
    router = project.router
    if router is None or not isinstance(url, str):
        return "direct (no [network] table)"
    try:
        return router.route(url).path
    except GodwitError as exc:
        return f"refused: {exc.message}"


def network_check(project: Project) -> str:
    """When `godwit network check` last ran and what it found (the private path is only trusted
    after one passed: a DNS change makes the next cycle refuse until it does)."""
    with project.db.unit() as u:
        check = NetworkRecords(u.connection).last_check()
    if not check or not isinstance(check.get("at"), (int, float)):
        return "never run"
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(check["at"]))
    if check.get("ok"):
        return f"passed at {when}"
    failed = [str(f) for f in check.get("failed") or []]
    return f"FAILED at {when}" + (f": {', '.join(failed)}" if failed else "")


def _operator(request: Request, project: Project) -> TokenView | Response:
    who = _who(request, project)
    if who is None:
        return RedirectResponse("/ui/login", status_code=303)
    if RANK[who.role] < RANK["operator"]:
        return HTMLResponse(actions.result_page(project.config.name, "Not allowed", "This needs the operator role.",
                                                failed=True), status_code=403)
    return who


@router.get("/servers/{name}/confirm")
def confirm(request: Request, name: str = ServerName, action: str = Query(pattern="^(enable|test|cleanup|planned)$"),
            project: Project = Depends(project_of)) -> Response:
    who = _operator(request, project)
    if isinstance(who, Response):
        return who
    project.db.server(name)  # unknown: the API's 404
    return HTMLResponse(actions.confirm_page(project.config.name, name, action,
                                             actions.form_key(request.cookies[COOKIE])))


@router.post("/servers/{name}/{action}")
async def act(request: Request, name: str = ServerName, action: str = Path(pattern="^(enable|test|cleanup|planned)$"),
              project: Project = Depends(project_of)) -> Response:
    who = await run_in_threadpool(_operator, request, project)
    if isinstance(who, Response):
        return who
    form = parse_qs((await request.body())[:4096].decode("utf-8", "replace"))
    key = (form.get("key") or [""])[0]
    if not hmac.compare_digest(key, actions.form_key(request.cookies[COOKIE])):
        return HTMLResponse(actions.result_page(project.config.name, "Not confirmed",
                                                "This form is not from this session; start again from the servers.",
                                                failed=True), status_code=403)
    label = actions.ACTIONS[action][0]
    try:
        op = await run_in_threadpool(submit, request.app.state, action, name)
    except GodwitError as exc:
        return HTMLResponse(actions.result_page(project.config.name, f"{label} failed", exc.message, failed=True),
                            status_code=status_of(exc))
    return RedirectResponse(f"/ui/operations/{op.id}", status_code=303)


@router.get("/operations/{op_id}")
def operation(request: Request, op_id: int = Path(ge=1, le=2**62), project: Project = Depends(project_of)) -> Response:
    if _who(request, project) is None:
        return RedirectResponse("/ui/login", status_code=303)
    return HTMLResponse(actions.operation_page(project.config.name, request.app.state.operations.get(op_id)))


@router.get("/operations/{op_id}/stream")
def operation_stream(request: Request, op_id: int = Path(ge=1, le=2**62),
                     project: Project = Depends(project_of)) -> Response:
    if _who(request, project) is None:
        return Response(status_code=401)
    ops = request.app.state.operations
    ops.get(op_id)  # unknown: the API's 404

    async def events() -> AsyncIterator[str]:
        while not await request.is_disconnected():
            if await run_in_threadpool(_who, request, project) is None:
                return
            op = await run_in_threadpool(ops.get, op_id)
            done = op.state in ("succeeded", "failed")
            data = json.dumps({"state": op.state, "text": actions.message(op), "failed": op.state == "failed",
                               "done": done})
            yield f"event: operation\ndata: {data}\n\n"
            if done:
                return
            await asyncio.sleep(OP_INTERVAL)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


def _snapshot(project: Project, live: LiveProgress) -> str:
    servers = [{"server": s.server, "cells": page.cells(s), "progress": page.progress(s, live.fraction(s.server)),
                "charts": page.charts(s)} for s in lifecycle.status(project)]
    events = [{"level": e.level, "text": page.event_text(e)} for e in project.db.events(None, EVENTS)]
    return json.dumps({"servers": servers, "events": events, "updated": time.strftime("%H:%M:%S")})


@router.get("/stream")
def stream(request: Request, project: Project = Depends(project_of)) -> Response:
    if _who(request, project) is None:
        return Response(status_code=401)

    async def events() -> AsyncIterator[str]:
        while not await request.is_disconnected():
            if await run_in_threadpool(_who, request, project) is None:  # revoked or expired meanwhile
                return
            snapshot = await run_in_threadpool(_snapshot, project, request.app.state.progress)
            yield f"event: status\ndata: {snapshot}\n\n"
            await asyncio.sleep(INTERVAL)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
