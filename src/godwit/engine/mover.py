"""Applying committed cycles to replica disks, strictly in order.

For each server, for each committed cycle in number order: check that its parent is the replica's
latest recovery point, ``begin`` every disk (the replica saves what it needs to roll back), apply
every verified write, ``seal`` every disk, record recovery point N and release recovery points beyond
the retention. The cycle's cache objects are deleted *behind* the apply, by one background thread
that ``apply_server`` joins before it returns: the next cycle's apply does not wait for the unlinks
(on a ``discard``-mounted ext4 here they took half as long as the apply itself, docs/benchmarks.md).
A damaged pack stops the server's disks: the partial apply is rolled back, the disk is flagged, an
event is written.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
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
    seconds: float  # from the cycle's start until its recovery point was sealed and recorded
    sealed_at: float = 0.0  # time.perf_counter() when it was recorded


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


def _named_packs(project: Project, server: Server) -> set[str] | None:
    """Packs that a committed (not yet applied) cycle's manifest or an open cycle's journal names;
    None when a committed manifest cannot be read (then no pack can be shown to be free)."""
    named: set[str] = set()
    for c in project.db.cycles(server.id, ("committed",)):
        try:
            named.update(load_manifest(project.store, server.uid, c.number).packs())
        except (ObjectMissingError, CorruptObjectError):
            return None
    with project.db.unit() as u:
        named.update(u.cycles.journaled_packs([c.id for c in u.cycles.for_server(server.id, ("open",))]))
    return named


def release_cache(project: Project, server: Server) -> None:
    """Delete the cache objects of applied cycles (packs first, the manifest last), never a pack
    that a cycle still to be applied, or an open cycle's journal, names. Idempotent: a release
    that a crash interrupted is finished by the next (the manifest, still recorded, lists the rest)."""
    applied = [c for c in project.db.cycles(server.id, ("applied",)) if c.manifest_key]
    if not applied:
        return
    named = _named_packs(project, server)
    if named is None:
        log.warning("%s: a committed cycle's manifest is unreadable; the cache is released after resync",
                    server.name)
        return
    for c in applied:
        assert c.manifest_key is not None
        kept = False
        try:
            for p in load_manifest(project.store, server.uid, c.number).packs():
                if p in named:
                    kept = True  # named by a cycle still to come: that cycle's release deletes it
                else:
                    project.store.delete(pack_key(server.uid, p))
        except (ObjectMissingError, CorruptObjectError):
            pass  # the manifest is gone or damaged: only the manifest itself is left to delete
        if kept:
            continue
        project.store.delete(c.manifest_key)
        with project.db.unit() as u:
            u.cycles.forget_manifest(c.id)


class _Releaser:
    """Releases the cache of applied cycles in one background thread, in the order asked, while
    the mover goes on. Safe at any moment: a point is recorded before its release is asked for, and
    a release cut short is finished by the next one (``apply_server`` starts with one)."""

    def __init__(self, project: Project, server: Server) -> None:
        self._project, self._server = project, server
        self._pool: ThreadPoolExecutor | None = None
        self._jobs: list[Future[None]] = []

    def submit(self, *, orphans: bool = True) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="godwit-release")
        self._jobs.append(self._pool.submit(self._release, orphans))

    def _release(self, orphans: bool) -> None:
        release_cache(self._project, self._server)
        if orphans:
            collect_orphans(self._project, self._server)

    def join(self, *, raise_error: bool = True) -> None:
        """Wait for every release asked for; raise the first failure (or only log it)."""
        if self._pool is None:
            return
        self._pool.shutdown(wait=True)
        self._pool = None
        jobs, self._jobs = self._jobs, []
        errors = [e for e in (j.exception() for j in jobs) if e is not None]
        if errors and not raise_error:
            log.error("%s: releasing the cache failed (%s); the next run finishes it", self._server.name, errors[0])
        elif errors:
            raise errors[0]


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
        releaser = _Releaser(project, server)
        releaser.submit(orphans=False)  # finish releases a crash interrupted, behind the first apply
        replicas: list[ReplicaDisk] = []
        results: list[ApplyResult] = []
        try:
            replicas = [project.replica(server, d) for d in project.db.disks(server.id)]
            for c in project.db.cycles(server.id, ("committed",)):
                if limit is not None and len(results) >= limit:
                    break
                results.append(_apply_cycle(project, server, c.id, c.number, replicas, progress, releaser))
        except BaseException:
            releaser.join(raise_error=False)  # the apply's own error is the one to report
            raise
        else:
            releaser.join()  # the cache is released when we return, as callers expect
        finally:
            for r in replicas:
                r.close()
    return results


def _apply_cycle(project: Project, server: Server, cycle_id: int, number: int, replicas: list[ReplicaDisk],
                 progress: ProgressFn | None, releaser: _Releaser) -> ApplyResult:
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
        for batch in iter_packs(project.store, m, recycle=True):  # write() copies what it is given
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
    sealed_at = time.perf_counter()
    releaser.submit()  # behind us: the point is recorded, so the cycle's packs are no longer needed
    _retain(project, server, replicas)
    return ApplyResult(number, done, sealed_at - t0, sealed_at)


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
