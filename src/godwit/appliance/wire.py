"""What the appliance reads from the service and what it sends, on the appliance's side.

The service's models (``service/protocol_models.py``) are the contract; the appliance, a sibling
layer, cannot import them, so it reads the fields it uses here (tolerant of fields it does not
know) and builds its reports as plain JSON; tests/appliance/test_wire.py validates those against
the service's models, so the two cannot drift unseen.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from godwit.errors import ConflictError, ProjectError
from godwit.format.keys import hashes_key
from godwit.project.project import Project
from godwit.state import hashstore
from godwit.state.db import Cycle, Server


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Disk(_Read):
    index: int
    uid: str
    spec: str
    format: str
    size: int


class ServerPlan(_Read):
    name: str
    uid: str
    replicate: bool
    last_cycle: int | None
    accepted: int | None
    latest_recovery_point: int | None
    final: bool = False
    disks: list[Disk]


class Command(_Read):
    id: int
    server: str
    kind: str


class Desired(_Read):
    appliance: str
    store_id: str
    interval_seconds: float
    max_mbps: float | None
    last_event: int
    servers: list[ServerPlan]
    commands: list[Command]


def parse_desired(doc: Any) -> Desired:
    try:
        return Desired.model_validate(doc)
    except ValidationError:
        raise ProjectError("the service's desired state is not godwit's API",
                           hint="run the same godwit version on the appliance and the service") from None


STATS = ("packs", "bytes_read", "bytes_changed", "bytes_sent", "t_read", "t_cpu", "t_upload", "t_throttle", "t_wall")


def cycle_report(project: Project, server: Server, c: Cycle) -> dict[str, Any]:
    """The report of a locally committed cycle, after putting its block hashes into the store.

    The manifest and packs are there already (the cycle engine put them before it committed); the
    block hashes are the one thing only this appliance had, so they go next to them first.
    """
    with project.db.unit() as u:
        disks = u.servers.disks(server.id)
        rows = {r.disk_id: r for r in u.cycles.disk_rows([c.id])}
        live = [x.number for x in u.cycles.for_server(server.id, ("committed", "applied")) if x.number < c.number]
    for d in disks:
        p = hashstore.path(project.hashes_dir, d.uid, c.number)
        try:
            data = p.read_bytes()
        except OSError:
            raise ConflictError(f"cycle {c.number} of {server.name}: its block hashes of disk {d.idx} are gone "
                                f"from {p}", hint=f"`godwit replicate resync {server.name}` on the service") from None
        project.store.put(hashes_key(server.uid, d.uid, c.number), data)
    if not c.manifest_key or not c.committed:
        raise ConflictError(f"cycle {c.number} of {server.name} is not committed")
    return {
        "server": server.name, "number": c.number, "parent": live[-1] if live else None, "kind": c.kind,
        "consistency": c.consistency or "none", "manifest_key": c.manifest_key, "started": c.started,
        "committed": c.committed, **{k: getattr(c, k) for k in STATS},
        "disks": [{"index": d.idx, "size": rows[d.id].size if d.id in rows else d.size,
                   "bytes_read": rows[d.id].bytes_read if d.id in rows else 0,
                   "bytes_changed": rows[d.id].bytes_changed if d.id in rows else 0,
                   "bytes_sent": rows[d.id].bytes_sent if d.id in rows else 0,
                   "extents": rows[d.id].extents if d.id in rows else 0} for d in disks],
    }
