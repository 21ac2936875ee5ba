"""`godwit assess`: is a server's replica, at a recovery point, ready to boot in Azure?

Read-only from end to end: each disk of the recovery point is served by a read-only NBD export
(``nbd_server``) to libguestfs's appliance, run in a child process (``guest``) that is killed,
appliance and all, when it exceeds the time limit. Nothing is mounted on this host.
"""

from __future__ import annotations

import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from pydantic import BaseModel

from godwit.assess import rules
from godwit.assess.child import run_child
from godwit.assess.evaluate import evaluate
from godwit.assess.nbd_server import PointServer
from godwit.assess.rules import Finding, Status
from godwit.errors import AssessError, NotFoundError, UsageError
from godwit.project.project import Project
from godwit.state.db import RecoveryPoint, Server
from godwit.state.locks import server_lock

TIMEOUT = 300.0  # seconds for the whole appliance run; the first launch builds it (~15 s)


class OperatingSystem(BaseModel):
    type: str
    distro: str
    product: str
    version: str
    arch: str


class Assessment(BaseModel):
    server: str
    recovery_point: int
    target: str
    status: Status
    os: OperatingSystem | None
    generation: int | None
    findings: list[Finding]
    seconds: float


def pick_point(project: Project, server: Server, which: str) -> RecoveryPoint:
    points = project.db.recovery_points(server.id)
    if not points:
        raise NotFoundError(f"server {server.name} has no recovery point yet",
                            hint="run `godwit replicate start` and `godwit mover run` first")
    if which == "latest":
        return points[-1]
    try:
        n = int(which)
    except ValueError:
        raise UsageError(f"recovery point {which!r} is not a number or 'latest'") from None
    for rp in points:
        if rp.number == n:
            return rp
    raise NotFoundError(f"recovery point {n} of {server.name} is not available "
                        f"(available: {', '.join(str(p.number) for p in points)})")


def assess(project: Project, name: str, *, recovery_point: str = "latest", target: str = "azure",
           timeout: float = TIMEOUT) -> Assessment:
    t0 = time.perf_counter()
    try:
        book = rules.load(target)
    except FileNotFoundError:
        raise UsageError(f"target {target!r} has no rules", hint="use azure") from None
    server = project.db.server(name)
    with server_lock(project.state_dir, name, "apply"), ExitStack() as stack:  # the mover waits
        rp = pick_point(project, server, recovery_point)
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="godwit-assess-")))
        sockets = []
        for d in project.db.disks(server.id):
            replica = project.replica(server, d)
            stack.callback(replica.close)
            reader = stack.enter_context(replica.open_point(rp.number))
            srv = stack.enter_context(PointServer(reader, work / f"disk{d.idx}.sock"))
            sockets.append(srv.path)
        facts = run_child("godwit.assess.guest", [str(x) for x in sockets], timeout, work)
    if "error" in facts:
        raise AssessError(f"the guest cannot be assessed: {facts['error']}",
                          hint="the disk may be damaged or not hold an operating system; "
                               "check it with fsck on a copy")
    if facts.get("os") is None and not facts.get("encrypted"):
        raise AssessError(f"no operating system found on the disks of {name} at recovery point {rp.number}",
                          hint="the filesystems may be damaged, or the OS disk is not among the server's disks")
    findings, gen = evaluate(book, facts)
    os_ = facts.get("os")
    return Assessment(
        server=name, recovery_point=rp.number, target=target, status=rules.worst(findings),
        os=None if os_ is None else OperatingSystem(
            type=os_["type"], distro=os_["distro"], product=os_["product"],
            version=f"{os_['major']}.{os_['minor']}", arch=os_["arch"]),
        generation=gen, findings=findings, seconds=round(time.perf_counter() - t0, 2))
