"""``godwit sources sweep``: find and remove what source-side cycles left behind.

A cycle that died (killed, host rebooted) can leave, on a live QEMU disk, a fleecing export,
backup job, overlay node and overlay file, and a dead cycle's ``godwit-next-*`` bitmap; on a
qcow2 file, an internal ``godwit-*`` snapshot. The next cycle of that disk cleans its own, but a
server that is paused, stopped or removed never runs one. Sweep visits every server whose cycle
lock is free (a running cycle owns its objects; they are skipped) and removes its leftovers;
bitmaps go through the bitmap tracker's recovery (a dead cycle's bitmap is merged back, stale
ones removed), so tracking is never lost by a sweep.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from godwit.errors import ConflictError, GodwitError
from godwit.project.project import Project
from godwit.sources.live_fleece import cleanup_leftovers
from godwit.sources.live_spec import FLEECE_PREFIX, LiveSpec, fleece_name, is_live_spec
from godwit.sources.qcow2_snapshot import SNAPSHOT_PREFIX, delete_snapshot
from godwit.sources.qemu_img import qemu_img
from godwit.sources.qmp import QmpSession
from godwit.state.locks import server_lock
from godwit.trackers.base import TrackedDisk
from godwit.trackers.bitmap import PREFIX as BITMAP_PREFIX
from godwit.trackers.bitmap import BitmapTracker


@dataclass(frozen=True)
class Leftover:
    server: str
    disk: int
    what: str  # "fleecing node", "overlay file", "bitmap", "qcow2 snapshot"
    name: str
    action: str  # what sweep does (or would do) with it


def sweep(project: Project, *, dry_run: bool = False) -> tuple[list[Leftover], list[str]]:
    """(leftovers found, servers skipped because a cycle holds them)."""
    found: list[Leftover] = []
    busy: list[str] = []
    for server in project.db.servers():
        try:
            with server_lock(project.state_dir, server.name, "cycle"):
                committed = project.db.cycles(server.id, ("committed", "applied"))
                base = committed[-1].number if committed else None
                for d in project.db.disks(server.id):
                    key = f"{server.uid}-d{d.idx}"
                    if d.format == "qemu-live" and is_live_spec(d.spec):
                        found += _live(project, server.name, d.idx, d.uid, d.spec, key, base, dry_run)
                    elif d.format == "qcow2":
                        found += _snapshots(server.name, d.idx, Path(d.spec), dry_run)
        except ConflictError:
            busy.append(server.name)
    return found, busy


def _live(project: Project, server: str, idx: int, uid: str, spec: str, key: str, base: int | None,
          dry_run: bool) -> list[Leftover]:
    ls = LiveSpec.parse(spec)
    name = fleece_name(key)
    fleece_dir = ls.fleece_dir or project.snapshots_dir
    out: list[Leftover] = []
    try:
        q = QmpSession(ls.qmp)
    except GodwitError as exc:
        return [Leftover(server, idx, "monitor", str(ls.qmp), f"not reachable: {exc.message}")]
    with q:
        nodes = q.nodes()
        if name in nodes:
            out.append(Leftover(server, idx, "fleecing node", name, "kept (dry run)" if dry_run else
                                "removed with its export and job"))
        overlays = sorted(fleece_dir.glob(f"{name}.qcow2")) if fleece_dir.is_dir() else []
        out += [Leftover(server, idx, "overlay file", str(p), "kept (dry run)" if dry_run else "deleted")
                for p in overlays]
        node = nodes.get(ls.node) or {}
        marks = [b["name"] for b in node.get("dirty-bitmaps") or []
                 if str(b.get("name", "")).startswith(BITMAP_PREFIX) and b["name"] != f"godwit-c{base}"]
        out += [Leftover(server, idx, "bitmap", m, "kept (dry run)" if dry_run else
                         "merged into the base's bitmap, kept until the next commit" if "-next-" in m
                         else "removed (stale)") for m in marks]
        if dry_run:
            return out
        cleanup_leftovers(q, name, fleece_dir / f"{name}.qcow2", quiet=True, nodes=nodes)
        if marks:
            bitmaps = {b["name"]: b for b in node.get("dirty-bitmaps") or [] if "name" in b}
            BitmapTracker().recover(q, ls.node, bitmaps, base, TrackedDisk(uid, idx, Path(spec)), [])
    return out


def _snapshots(server: str, idx: int, path: Path, dry_run: bool) -> list[Leftover]:
    rc, text, _ = qemu_img("info", "--output=json", "-U", "-f", "qcow2", str(path))
    if rc != 0:
        return []
    names: list[str] = []
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        names = [str(s.get("name", "")) for s in json.loads(text).get("snapshots", [])]
    out = []
    for n in names:
        if not n.startswith(SNAPSHOT_PREFIX):
            continue
        action = "kept (dry run)"
        if not dry_run:
            warning = delete_snapshot(path, n)
            action = "deleted" if warning is None else f"not deleted: {warning}"
        out.append(Leftover(server, idx, "qcow2 snapshot", n, action))
    return out


__all__ = ["FLEECE_PREFIX", "Leftover", "sweep"]
