"""Applying committed cycles to replica disks, strictly in order.

For each server, for each committed cycle in number order: check that its parent is the replica's
latest recovery point, ``begin`` every disk (the replica saves what it needs to roll back), apply
every verified write, ``seal`` every disk, record recovery point N, then release the cycle's cache
objects and recovery points beyond the retention. A damaged pack stops the server's disks: the
partial apply is rolled back, the disk is flagged, an event is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from godwit.engine.reader import iter_packs, load_manifest
from godwit.errors import ConflictError, CorruptObjectError, GodwitError, ObjectMissingError, ReplicaError
from godwit.format.keys import pack_key
from godwit.project.project import Project
from godwit.replicas.base import ReplicaDisk
from godwit.state import hashstore
from godwit.state.db import Server
from godwit.state.locks import server_lock

log = logging.getLogger("godwit.mover")

ProgressFn = Callable[[int, int, int], None]  # (disk index, bytes done of all disks, total)
T = TypeVar("T")
MAX_PARALLEL_DISKS = 8


@dataclass
class ApplyResult:
    cycle: int
    bytes_written: int
    seconds: float


def _ranges(m_disk: object) -> list[tuple[int, int]]:
    d = m_disk
    return [(e.offset, e.length) for e in d.extents] + list(d.zeros)  # type: ignore[attr-defined]


def _each(items: Sequence[T], fn: Callable[[T], None]) -> None:
    """``fn`` on every item, in parallel threads (disks of one server); the first error raised
    after all have finished."""
    if len(items) <= 1:
        for it in items:
            fn(it)
        return
    with ThreadPoolExecutor(min(len(items), MAX_PARALLEL_DISKS), thread_name_prefix="godwit-disk") as pool:
        futures = [pool.submit(fn, it) for it in items]
    for f in futures:
        f.result()


def release_cache(project: Project, server: Server) -> None:
    """Delete the cache objects of applied cycles (packs first, the manifest last)."""
    for c in project.db.cycles(server.id, ("applied",)):
        if not c.manifest_key:
            continue
        try:
            m = load_manifest(project.store, server.uid, c.number)
            for p in m.packs():
                project.store.delete(pack_key(server.uid, p))
        except (ObjectMissingError, CorruptObjectError):
            pass  # the manifest is gone or damaged: only the manifest itself is left to delete
        project.store.delete(c.manifest_key)
        with project.db.unit() as u:
            u.cycles.forget_manifest(c.id)


def collect_orphans(project: Project, server: Server) -> list[str]:
    """Delete packs no committed manifest and no journal names (put by a process that died before
    journaling them). Runs only while no cycle of the server is running; returns deleted keys."""
    try:
        with server_lock(project.state_dir, server.name, "cycle"):
            referenced: set[str] = set()
            for c in project.db.cycles(server.id, ("committed",)):
                try:
                    referenced.update(load_manifest(project.store, server.uid, c.number).packs())
                except (ObjectMissingError, CorruptObjectError):
                    return []  # cannot tell what the damaged cycle names: delete nothing
            with project.db.unit() as u:
                referenced.update(u.cycles.journaled_packs([c.id for c in u.cycles.for_server(server.id, ("open",))]))
            prefix = f"servers/{server.uid}/packs/"
            orphans = [k for k in project.store.list(prefix)
                       if k.endswith(".pack") and k[len(prefix):-5] not in referenced]
            for k in orphans:
                project.store.delete(k)
            if orphans:
                log.info("%s: deleted %d orphan pack(s)", server.name, len(orphans))
            return orphans
    except ConflictError:
        return []  # a cycle is running; next time


def apply_server(project: Project, name: str, *, progress: ProgressFn | None = None,
                 limit: int | None = None) -> list[ApplyResult]:
    server = project.db.server(name)
    with server_lock(project.state_dir, name, "apply", wait=10):  # a test migration may be exporting
        release_cache(project, server)  # finish releases a crash interrupted
        disks = project.db.disks(server.id)
        replicas = [project.replica(server, d) for d in disks]
        results: list[ApplyResult] = []
        try:
            for c in project.db.cycles(server.id, ("committed",)):
                if limit is not None and len(results) >= limit:
                    break
                results.append(_apply_cycle(project, server, c.id, c.number, replicas, progress))
        finally:
            for r in replicas:
                r.close()
    return results


def _apply_cycle(project: Project, server: Server, cycle_id: int, number: int, replicas: list[ReplicaDisk],
                 progress: ProgressFn | None) -> ApplyResult:
    t0 = time.perf_counter()
    db = project.db
    m = load_manifest(project.store, server.uid, number, store_id=project.store_id())
    # The state's recovery points are the truth: a replica may carry a point sealed by a run that
    # died before recording it, or a cycle later discarded by resync.
    sealed = db.recovery_points(server.id)
    latest = sealed[-1].number if sealed else 0
    if m.parent not in (None, latest):
        raise ReplicaError(f"cycle {number} of {server.name} builds on cycle {m.parent}, but the replicas are at "
                           f"recovery point {latest}", hint="cycles must be applied in order; run `godwit mover run`")
    if len(m.disks) != len(replicas):
        raise CorruptObjectError(f"cycle {number} of {server.name} has {len(m.disks)} disks, the server "
                                 f"{len(replicas)}")
    log.info("%s: applying cycle %d (%d disk(s))", server.name, number, len(m.disks))
    _each(m.disks, lambda d: replicas[d.index].begin(number, _ranges(d), d.size))
    total = sum(e.length for d in m.disks for e in d.extents)
    done = 0
    try:
        # The replicas write behind (each disk its own writer thread), so the disks are written in
        # parallel while the reader fetches and verifies the next packs.
        for batch in iter_packs(project.store, m):
            for w in batch:
                r = replicas[w.disk]
                if w.data is None:
                    r.zero(w.offset, w.length)
                else:
                    r.write(w.offset, w.data)  # copied: the pack can go once its batch is done
                    done += w.length
                    if progress is not None:
                        progress(w.disk, done, total)
    except (CorruptObjectError, ObjectMissingError) as exc:
        _each(m.disks, lambda d: replicas[d.index].abort(number))  # every disk of the cycle
        msg = f"cycle {number} cannot be applied: {exc.message}"
        with db.unit() as u:
            u.servers.flag_disks(server.id, msg)
            u.events.add("error", msg + " (replicas rolled back to the last recovery point)", server=server.name,
                         cycle=number)
        raise type(exc)(msg, hint="the replicas are unchanged at their last recovery point; "
                                  f"run `godwit replicate resync {server.name}` to resend the changes") from None
    _each(m.disks, lambda d: replicas[d.index].seal(number))  # one fsync per disk, in parallel
    now = time.time()
    with db.unit() as u:  # the point and its cycle's new state together, or neither
        u.points.record(server.id, number, sealed=now, consistency=m.consistency,
                        disk_sizes=[d.size for d in sorted(m.disks, key=lambda d: d.index)])
        u.cycles.mark_applied(cycle_id, now)
        u.events.add("info", f"recovery point {number} sealed", server=server.name, cycle=number)
    release_cache(project, server)
    collect_orphans(project, server)
    _retain(project, server, replicas)
    return ApplyResult(number, done, time.perf_counter() - t0)


def _retain(project: Project, server: Server, replicas: list[ReplicaDisk]) -> None:
    keep = project.config.replicas.keep_recovery_points
    live = project.db.recovery_points(server.id)
    for rp in live[:-keep] if len(live) > keep else []:
        for r in replicas:
            r.release(rp.number)
        with project.db.unit() as u:
            u.points.release(rp.id)
    live = project.db.recovery_points(server.id)
    committed = project.db.cycles(server.id, ("committed", "applied"))
    keep_from = min([rp.number for rp in live] + [committed[-1].number if committed else 0])
    for d in project.db.disks(server.id):
        hashstore.prune(project.hashes_dir, d.uid, keep_from)


def run_mover(project: Project, *, progress_for: Callable[[str], ProgressFn | None] | None = None
              ) -> dict[str, int | GodwitError]:
    """Apply every server's committed cycles; one server's error does not stop the others."""
    out: dict[str, int | GodwitError] = {}
    for s in project.db.servers():
        if not project.db.cycles(s.id, ("committed",)):
            continue
        try:
            out[s.name] = len(apply_server(project, s.name,
                                           progress=progress_for(s.name) if progress_for else None))
        except ConflictError:
            log.info("%s: busy (a migration or another mover holds it); next round", s.name)
        except GodwitError as exc:
            log.error("%s: %s", s.name, exc.message)
            out[s.name] = exc
    return out
