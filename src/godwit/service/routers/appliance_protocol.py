"""The appliance protocol: an appliance pulls its desired state and commands and reports its cycles,
progress and events (it connects out; the service never connects to it); operators queue commands
and set an appliance's interval and throttle.

An appliance token sees its own servers only: another server is the unknown server's 404, and
another appliance is simply not there.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Path, Request
from sqlalchemy import Connection

from godwit.engine import lifecycle
from godwit.errors import NotFoundError
from godwit.project.project import Project
from godwit.service.auth import Principal, appliance_only, project_of, require
from godwit.service.intake import take_cycle
from godwit.service.models import NAME
from godwit.service.owned import OwnedServers
from godwit.service.protocol_models import (
    ApplianceSettingsRequest,
    ApplianceSettingsView,
    CommandDone,
    CommandRequest,
    CommandView,
    CycleAccepted,
    CycleReport,
    DesiredDisk,
    DesiredServer,
    DesiredState,
    EventBatch,
    EventsStored,
    ProgressReport,
    ProgressView,
    Unregistered,
)
from godwit.service.routers import API, AUTHED, errors
from godwit.state.appliance_protocol import ApplianceProtocol, Command, Progress
from godwit.state.appliances import Appliances, ApplianceView
from godwit.state.tokens import Tokens

router = APIRouter(prefix=API, tags=["appliance protocol"], responses={**AUTHED, **errors(404)})
ApplianceName = Path(pattern=NAME, max_length=63, examples=["site-a"])


def install(app: FastAPI, project: Project) -> None:
    """Include the router, and hold the cycle lock of every appliance's server (service/owned.py)."""
    app.include_router(router)
    app.state.owned = OwnedServers(project.state_dir)
    with project.db.unit() as u:
        names = sorted({s for a in Appliances(u.connection).all() for s in a.servers})
    app.state.owned.hold(names)


def owned(request: Request) -> OwnedServers:
    held: OwnedServers = request.app.state.owned
    return held


def _command(c: Command) -> CommandView:
    return CommandView(id=c.id, server=c.server, kind=c.kind, created=c.created, done=c.done,  # type: ignore[arg-type]
                       result=c.result)


def _me(c: Connection, who: Principal) -> ApplianceView:
    aid = Tokens(c).appliance_id(who.token.id)
    assert aid is not None  # an appliance token always names its appliance
    return Appliances(c).by_id(aid)


def _appliance(c: Connection, name: str) -> ApplianceView:
    a = Appliances(c).find(name)
    if a is None:
        raise NotFoundError(f"no appliance named {name!r}", hint="`GET /api/v1/appliances` lists them")
    return a


# -- the appliance's side --------------------------------------------------------------------------

@router.get("/appliance/desired")
def desired_state(who: Principal = Depends(appliance_only), project: Project = Depends(project_of),
                  held: OwnedServers = Depends(owned)) -> DesiredState:
    """What this appliance should do: its servers (which replicate, where the chain stands), the
    interval and throttle, and the commands not yet done. Also counts as a heartbeat."""
    store_id = project.store_id()
    if who.servers:
        held.hold(sorted(who.servers))
    with project.db.unit() as u:
        me = Appliances(u.connection).heartbeat(_me(u.connection, who).id)
        proto = ApplianceProtocol(u.connection)
        servers = []
        for name in me.servers:
            s = u.servers.get(name)
            servers.append(DesiredServer(
                name=s.name, uid=s.uid, replicate=s.state in ("replicating", "paused"),
                last_cycle=proto.last_number(s.id), accepted=proto.live_parent(s.id),
                latest_recovery_point=proto.latest_point(s.id), final=proto.migrating(s.name),
                disks=[DesiredDisk(index=d.idx, uid=d.uid, spec=d.spec, format=d.format, size=d.size)
                       for d in u.servers.disks(s.id)]))
        settings = proto.settings(me.id)
        commands = [_command(c) for c in proto.commands(me.id, pending=True)]
    return DesiredState(appliance=me.name, store_id=store_id,
                        interval_seconds=settings.interval_seconds or project.config.replication.interval_seconds,
                        max_mbps=settings.max_mbps, last_event=settings.last_event, servers=servers,
                        commands=commands)


@router.post("/appliance/cycles", responses=errors(409))
def report_cycle(body: CycleReport, who: Principal = Depends(appliance_only),
                 project: Project = Depends(project_of)) -> CycleAccepted:
    """Report a committed cycle. Taken only as the next of its server's chain (409 otherwise); the
    same report again is answered as accepted (``duplicate``), so a resend is harmless."""
    who.check_server(body.server)
    with project.db.unit() as u:
        me = _me(u.connection, who)
    new = take_cycle(project, me.id, me.name, body)
    return CycleAccepted(server=body.server, number=body.number, duplicate=not new)


@router.post("/appliance/progress", status_code=204)
def report_progress(body: ProgressReport, who: Principal = Depends(appliance_only),
                    project: Project = Depends(project_of)) -> None:
    import time

    who.check_server(body.server)
    with project.db.unit() as u:
        me = _me(u.connection, who)
        server = u.servers.get(body.server)
        ApplianceProtocol(u.connection).set_progress(me.id, server.id, Progress(
            body.server, body.cycle, body.bytes_done, body.bytes_total, body.throughput_bps, body.rpo_seconds,
            body.error, time.time()))


@router.post("/appliance/events")
def report_events(body: EventBatch, who: Principal = Depends(appliance_only),
                  project: Project = Depends(project_of)) -> EventsStored:
    """Store the appliance's events in its id order; ids at or below the last stored are skipped
    (a resend after a lost answer)."""
    for e in body.events:
        if e.server is not None:
            who.check_server(e.server)
    with project.db.unit() as u:
        me = _me(u.connection, who)
        proto = ApplianceProtocol(u.connection)
        last = proto.settings(me.id).last_event
        for e in sorted(body.events, key=lambda e: e.id):
            if e.id <= last:
                continue
            u.events.add(e.level, f"appliance {me.name}: {e.message}", server=e.server, cycle=e.cycle)
            last = e.id
        proto.set_last_event(me.id, last)
    return EventsStored(last_event=last)


@router.post("/appliance/commands/{command_id}/done")
def command_done(body: CommandDone, command_id: int = Path(ge=1, lt=1 << 62),
                 who: Principal = Depends(appliance_only), project: Project = Depends(project_of),
                 held: OwnedServers = Depends(owned)) -> CommandView:
    with project.db.unit() as u:
        me = _me(u.connection, who)
        before = ApplianceProtocol(u.connection).commands(me.id, pending=True)
        cmd = ApplianceProtocol(u.connection).finish_command(me.id, command_id, body.result)
    if cmd.kind == "resync" and any(c.id == command_id for c in before):
        # The appliance has discarded its unreported cycles and removed their objects; the service
        # forgets those it took but has not applied, so the next report builds on the latest point.
        with held.released(cmd.server):
            lifecycle.resync(project, cmd.server)
    return _command(cmd)


# -- the operators' side ---------------------------------------------------------------------------

@router.post("/appliances/{name}/commands", status_code=201, responses=errors(409))
def queue_command(body: CommandRequest, name: str = ApplianceName, _who: Principal = Depends(require("operator")),
                  project: Project = Depends(project_of)) -> CommandView:
    """Queue a command for the appliance: run a cycle of the server now, stop its replication, or
    resync it. ``stop`` also stops the server's replication here (its desired state says so)."""
    with project.db.unit() as u:
        a = _appliance(u.connection, name)
        if body.server not in a.servers:
            raise NotFoundError(f"appliance {name} does not replicate a server named {body.server!r}")
        server = u.servers.get(body.server)
        if body.kind == "stop":
            u.servers.set_state(server.id, "stopped")
        elif body.kind == "cycle" and server.state in ("added", "stopped"):
            u.servers.set_state(server.id, "replicating")  # a cycle asked for is replication enabled
        cmd = ApplianceProtocol(u.connection).add_command(a.id, server.id, body.kind)
        u.events.add("info", f"command {body.kind} queued for appliance {name}", server=body.server)
    return _command(cmd)


@router.delete("/appliances/{name}")
def unregister(name: str = ApplianceName, _who: Principal = Depends(require("admin")),
               project: Project = Depends(project_of), held: OwnedServers = Depends(owned)) -> Unregistered:
    """Forget the appliance: its tokens stop working at once, its servers are the service's again
    (their replication stopped: enable it here or on another appliance), its queued commands go.
    Cycles it put in the cache store and did not report are collected as orphans."""
    with project.db.unit() as u:
        a, stopped = Appliances(u.connection).unregister(name)
        u.events.add("warning", f"appliance {name} unregistered; its servers ({', '.join(a.servers) or 'none'}) "
                                "are the service's again" + (f", replication stopped for {', '.join(stopped)}"
                                                             if stopped else ""))
    held.drop(a.servers)
    return Unregistered(appliance=a, stopped=stopped)


@router.get("/appliances/{name}/commands")
def list_commands(name: str = ApplianceName, _who: Principal = Depends(require("reader")),
                  project: Project = Depends(project_of)) -> list[CommandView]:
    """The appliance's last 100 commands, newest first."""
    with project.db.unit() as u:
        return [_command(c) for c in ApplianceProtocol(u.connection).commands(_appliance(u.connection, name).id)]


@router.get("/appliances/{name}/progress")
def list_progress(name: str = ApplianceName, _who: Principal = Depends(require("reader")),
                  project: Project = Depends(project_of)) -> list[ProgressView]:
    with project.db.unit() as u:
        rows = ApplianceProtocol(u.connection).progress(_appliance(u.connection, name).id)
    return [ProgressView(server=p.server, cycle=p.cycle, bytes_done=p.bytes_done, bytes_total=p.bytes_total,
                         throughput_bps=p.throughput_bps, rpo_seconds=p.rpo_seconds, error=p.error,
                         updated=p.updated) for p in rows]


@router.put("/appliances/{name}/settings")
def change_settings(body: ApplianceSettingsRequest, name: str = ApplianceName,
                    _who: Principal = Depends(require("operator")),
                    project: Project = Depends(project_of)) -> ApplianceSettingsView:
    """The appliance's cycle interval and throttle (null: the project's interval, the appliance's
    own throttle); it takes them at its next pull."""
    with project.db.unit() as u:
        s = ApplianceProtocol(u.connection).set_settings(_appliance(u.connection, name).id, body.interval_seconds,
                                                         body.max_mbps)
    return ApplianceSettingsView(interval_seconds=s.interval_seconds, max_mbps=s.max_mbps)
