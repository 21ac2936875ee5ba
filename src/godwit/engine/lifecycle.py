"""Replication lifecycle: start, stop, one cycle, the appliance loop, and status."""

from __future__ import annotations

import itertools
import logging
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from godwit.engine import gateway_state, schedule_state
from godwit.engine.cycle import CycleResult, ProgressFn, bottleneck, run_cycle
from godwit.engine.schedule_state import ScheduleFile
from godwit.engine.scheduler import Scheduler
from godwit.errors import ConflictError, GodwitError
from godwit.project.project import Project
from godwit.sources.live import SpaceLowError
from godwit.state.network import NetworkRecords
from godwit.state.views import CycleStatus, DiskStatus, ServerStatus
from godwit.stores import throttle

log = logging.getLogger("godwit.engine.lifecycle")


def start(project: Project, name: str, *, progress: ProgressFn | None = None) -> CycleResult | None:
    """Enable replication; run the initial cycle if the server has none committed yet."""
    server = project.db.server(name)
    if server.state == "migrated":
        raise ConflictError(f"server {name} is already migrated")
    with project.db.unit() as u:
        u.servers.set_state(server.id, "replicating")
        u.events.add("info", "replication enabled", server=name)
    if project.db.cycles(server.id, ("committed", "applied")) and not project.db.cycles(server.id, ("open",)):
        return None
    return cycle(project, name, progress=progress)


def stop(project: Project, name: str) -> None:
    server = project.db.server(name)
    if server.state == "migrated":
        raise ConflictError(f"server {name} is migrated; there is no replication to stop")
    with project.db.unit() as u:
        u.servers.set_state(server.id, "stopped")
        u.events.add("info", "replication stopped", server=name)


def cycle(project: Project, name: str, *, progress: ProgressFn | None = None, kind: str = "delta") -> CycleResult:
    server = project.db.server(name)
    if server.state in ("added", "stopped"):
        raise ConflictError(f"replication of {name} is not enabled",
                            hint=f"run `godwit replicate start {name}`")
    try:
        result = run_cycle(project, name, kind, progress=progress)
    except SpaceLowError as exc:  # a live disk's overlay would fill: wait for space (the loop retries)
        if server.state != "paused":
            with project.db.unit() as u:
                u.servers.set_state(server.id, "paused", exc.message)
                u.events.add("warning", f"replication paused: {exc.message}", server=name)
        raise
    if server.state == "paused":  # the error that paused it is gone
        with project.db.unit() as u:
            u.servers.set_state(server.id, "replicating")
            u.servers.clear_disk_errors(server.id)
    gateway_state.after_cycle(project, result)  # issue 9.4/9.8: the cycle's path; state to [gateway]
    return result


#: The cycles a long-running loop's report keeps (the newest): every one is in the state anyway.
REPORT_KEEPS = 1000


@dataclass
class LoopReport:
    cycles: list[CycleResult] = field(default_factory=list)
    errors: list[tuple[str, GodwitError]] = field(default_factory=list)
    applied: int = 0


class LoopMover(Protocol):
    """How the appliance loop gets its committed cycles applied (with a local cache or replicas).

    The default applies in the loop's own process (``InProcessMover``); on PostgreSQL the CLI
    hands the applies to the mover's job queue instead (``godwit.movers``), so that workers on
    other machines and this loop never apply one server at once."""

    def after_commit(self, name: str) -> int:
        """Called in the cycle's thread once its cycle committed; returns cycles applied here."""
        ...

    def sweep(self) -> dict[str, int | GodwitError]:
        """Everything committed and not applied (e.g. a stopped server's last cycles)."""
        ...


@dataclass
class InProcessMover:
    project: Project

    def after_commit(self, name: str) -> int:
        from godwit.engine.mover import apply_server

        return len(apply_server(self.project, name))

    def sweep(self) -> dict[str, int | GodwitError]:
        if not schedule_state.with_committed(self.project):
            return {}  # one query instead of one per server
        from godwit.engine.mover import run_mover

        return run_mover(self.project)


@dataclass
class _JobResult:
    cycle: CycleResult | None = None
    error: GodwitError | None = None
    applied: int = 0
    apply_error: GodwitError | None = None


def run_loop(project: Project, *, interval: float | None = None, once: bool = False,
             progress_for: Callable[[str], Any] | None = None,
             on_cycle: Callable[[CycleResult], None] | None = None,
             on_error: Callable[[str, GodwitError], None] | None = None,
             stop_event: threading.Event | None = None, continuous: bool = False,
             min_interval: float = 1.0, on_round: Callable[[], None] | None = None,
             mover: LoopMover | None = None, apply: bool = True) -> LoopReport:
    """The appliance loop: every enabled server gets a cycle when its interval has passed, up to
    ``replication.parallel_disks`` disks at once, in the order the scheduler picks
    (``engine.scheduler``: oldest recovery point first, initials yield, errors back off).

    ``continuous``: a server's next cycle is due ``min_interval`` seconds after its previous one
    started; the throttle still bounds the upload. The RPO is then about one cycle's read and upload
    of the churn. All parallel cycles share the project's store, hence one throttle.

    With a local project (and ``apply``) a server's committed cycle is applied right after it, in
    the same job (so its apply never overlaps its next cycle), by ``mover`` (default: in this
    process). An error in one server is reported and backs
    that server off; the others go on. ``progress_for`` is entered in the cycle's thread;
    ``on_cycle``, ``on_error`` and ``on_round`` are called in the caller's thread.
    """
    interval = interval if interval is not None else project.config.replication.interval_seconds
    if continuous:
        interval = min_interval
    stop_event = stop_event or threading.Event()
    report = LoopReport()
    if threading.current_thread() is threading.main_thread():
        def on_signal(*_: object) -> None:
            # The first Ctrl-C or SIGTERM lets the running cycles finish; a second one stops them now
            # (safe: an interrupted cycle resumes from its journal next time).
            if stop_event.is_set():
                throttle.interrupt()  # uploads held by the cap end now, not when their bytes would
                raise KeyboardInterrupt
            log.warning("stopping after the running cycles (again to stop now; they will resume)")
            stop_event.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, on_signal)
    parallel = project.config.replication.parallel_disks
    sched = Scheduler.configured(project.config.replication, interval, clock=time.time, once=once)
    local = apply and (project.config.replicas.kind == "local" or project.config.cache.kind == "local")
    mover = mover if mover is not None else InProcessMover(project)
    project.store  # noqa: B018 -- made here, once: every cycle thread shares it (and its throttle)
    project.store_id()
    board = ScheduleFile(project)
    known = schedule_state.Candidates(project)
    pool = ThreadPoolExecutor(parallel, thread_name_prefix="godwit-cycle")
    running: dict[Future[_JobResult], str] = {}
    last_round = last_sweep = 0.0
    try:
        while True:
            if not stop_event.is_set():
                for name in sched.pick(known.get()):
                    running[pool.submit(_job, project, name, progress_for, mover if local else None)] = name
            board.write(sched, at_most_every=0.0 if not running else 1.0)
            if not running and (stop_event.is_set() or sched.idle()):
                break
            if not running and local and time.monotonic() - last_sweep >= max(interval, 10.0):
                last_sweep = time.monotonic()  # e.g. stopped servers' cycles, an apply that failed
                report.applied += _run_mover(mover, report, on_error)
            if time.monotonic() - last_round >= 1.0:
                last_round = time.monotonic()
                project.tick_windows()  # a window that passed with nothing sent is logged too
                if on_round is not None:  # e.g. scheduled cutovers that are due (ops.cutover)
                    on_round()
            nxt = sched.next_event()
            timeout = 1.0 if nxt is None else max(0.01, min(1.0, nxt))
            if running:
                done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                stop_event.wait(timeout)
                done = set()
            for fut in done:
                name = running.pop(fut)
                if _finish(project, sched, report, name, fut, on_cycle, on_error):
                    known.committed(name)
        if local:
            report.applied += _run_mover(mover, report, on_error)
        project.tick_windows()
        if on_round is not None:
            on_round()
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)  # the running ones resume from their journals
        raise
    finally:
        board.remove()
    pool.shutdown(wait=True)
    return report


def _job(project: Project, name: str, progress_for: Callable[[str], Any] | None, mover: LoopMover | None
         ) -> _JobResult:
    """One server's turn, in a pool thread: its cycle, then (local) the mover for that server."""
    out = _JobResult()
    try:
        if progress_for is not None:
            with progress_for(name) as prog:
                out.cycle = cycle(project, name, progress=prog)
        else:
            out.cycle = cycle(project, name)
    except ConflictError as exc:
        if project.db.server(name).state not in schedule_state.ENABLED:
            return out  # stopped (or migrated) since the loop read it: nothing to report
        out.error = exc
        return out
    except GodwitError as exc:
        out.error = exc
        return out
    if mover is not None:  # the cycle just committed: there is something to apply
        try:
            out.applied = mover.after_commit(name)
        except ConflictError:
            log.info("%s: busy (a migration or another mover holds it); next round", name)
        except GodwitError as exc:
            out.apply_error = exc
    return out


def _finish(project: Project, sched: Scheduler, report: LoopReport, name: str, fut: Future[_JobResult],
            on_cycle: Callable[[CycleResult], None] | None,
            on_error: Callable[[str, GodwitError], None] | None) -> bool:
    """Report one job's end; whether its cycle committed."""
    try:
        res = fut.result()
    except Exception as exc:  # a bug, not a GodwitError: report it, back the server off, go on
        log.exception("%s: the cycle failed unexpectedly", name)
        res = _JobResult(error=GodwitError(f"unexpected error: {type(exc).__name__}: {exc}"))
    if res.error is not None:
        sched.finished(name, error=res.error.message)
        report.errors.append((name, res.error))
        project.db.event("error", res.error.message, server=name)
        if on_error:
            on_error(name, res.error)
        return False
    sched.finished(name)
    if res.cycle is not None:
        report.cycles.append(res.cycle)
        if len(report.cycles) > 2 * REPORT_KEEPS:  # a loop that runs for weeks keeps the newest only
            del report.cycles[:-REPORT_KEEPS]
        if on_cycle:
            on_cycle(res.cycle)
    report.applied += res.applied
    if res.apply_error is not None:
        report.errors.append((name, res.apply_error))
        if on_error:
            on_error(name, res.apply_error)
    return True


def _run_mover(mover: LoopMover, report: LoopReport, on_error: Callable[[str, GodwitError], None] | None) -> int:
    applied = 0
    for name, res in mover.sweep().items():
        if isinstance(res, GodwitError):
            report.errors.append((name, res))
            if on_error:
                on_error(name, res)
        else:
            applied += res
    return applied


def status(project: Project, name: str | None = None) -> list[ServerStatus]:
    """Per server: state, last cycle, RPO, bytes per disk, the last ten cycles (one consistent read)."""
    now = time.time()
    out: list[ServerStatus] = []
    board = schedule_state.read(project)
    with project.db.unit() as u:
        servers = [u.servers.get(name)] if name else u.servers.all()
        for s in servers:
            cycles = u.cycles.for_server(s.id)
            committed = [c for c in cycles if c.state in ("committed", "applied")]
            last = committed[-1] if committed else None
            waiting = [c.id for c in committed if c.state == "committed"]  # in the cache, not yet applied
            per_disk = {r.disk_id: r for r in u.cycles.disk_rows([last.id])} if last else {}
            stored_by_disk: dict[int, int] = {}
            for row in u.cycles.disk_rows(waiting):
                stored_by_disk[row.disk_id] = stored_by_disk.get(row.disk_id, 0) + row.bytes_sent
            rpo = (now - last.committed) if last and last.committed else None
            rpo_max = _rpo_max([c.committed for c in committed[-11:] if c.committed], now)
            disks = []
            for d in u.servers.disks(s.id):
                r = per_disk.get(d.id)
                disks.append(DiskStatus(
                    index=d.idx, spec=d.spec, format=d.format, size=d.size,
                    state=d.state if d.state != "ok" else s.state, error=d.error,
                    last_cycle=last.number if last else None,
                    bytes_read=r.bytes_read if r else 0, bytes_sent=r.bytes_sent if r else 0,
                    bytes_changed=r.bytes_changed if r else 0, bytes_stored=stored_by_disk.get(d.id, 0),
                    throughput_bps=(r.bytes_read / last.t_wall) if r and last and last.t_wall else None,
                    rpo_seconds=rpo, rpo_max_seconds=rpo_max))
            rps = u.points.for_server(s.id)
            out.append(ServerStatus(
                server=s.name, state=s.state, error=s.error,
                last_cycle=last.number if last else None,
                open_cycle=next((c.number for c in cycles if c.state == "open"), None),
                rpo_seconds=rpo, rpo_max_seconds=rpo_max,
                bytes_stored=sum(c.bytes_sent for c in committed if c.state == "committed"),
                throughput_bps=(last.bytes_read / last.t_wall) if last and last.t_wall else None,
                latest_recovery_point=rps[-1].number if rps else None,
                disks=disks,
                cycles=[CycleStatus(**{k: v for k, v in asdict(c).items()
                                       if k not in ("id", "server_id", "manifest_key")},
                                    bottleneck=bottleneck(c.t_read, c.t_cpu, c.t_upload, c.t_throttle))
                        for c in cycles[-10:]],
                network=NetworkRecords(u.connection).status(last.id if last else None),
                schedule=board.get(s.name),
            ))
    return out


def _rpo_max(commits: list[float], now: float) -> float | None:
    """Just before each commit the RPO was the time since the one before: the worst such gap."""
    if not commits:
        return None
    return max([b - a for a, b in itertools.pairwise(commits)] + [now - commits[-1]])


def check_cache(project: Project, name: str) -> list[dict[str, Any]]:
    """Re-read every committed cycle still in the cache (not yet applied) and check it whole.

    Returns one row per cycle with ``ok`` and, when not ok, the error; nothing is written.
    """
    from godwit.engine.reader import verify_cycle

    server = project.db.server(name)
    rows: list[dict[str, Any]] = []
    for c in project.db.cycles(server.id, ("committed",)):
        try:
            verify_cycle(project.store, server.uid, c.number)
            rows.append({"cycle": c.number, "ok": True, "error": None})
        except GodwitError as exc:
            rows.append({"cycle": c.number, "ok": False, "error": exc.message})
            project.db.event("error", exc.message, server=name, cycle=c.number)
    return rows


def resync(project: Project, name: str) -> list[int]:
    """Discard cycles not yet applied (damaged or unwanted); the next cycle resends every change
    since the replicas' latest recovery point. Returns the discarded cycle numbers."""
    from godwit.engine.reader import load_manifest
    from godwit.errors import CorruptObjectError, ObjectMissingError
    from godwit.format.keys import pack_key
    from godwit.state import hashstore
    from godwit.state.locks import server_lock

    server = project.db.server(name)
    disks = project.db.disks(server.id)
    discarded: list[int] = []
    with server_lock(project.state_dir, name, "cycle"), server_lock(project.state_dir, name, "apply"):
        for c in project.db.cycles(server.id, ("open", "committed")):
            packs: list[str] = []
            if c.state == "committed":
                # The mover may have applied part of it before it failed or died: the next cycle
                # must resend everything it touched, whatever the block hashes say. Recorded
                # before any object goes, so a crash here loses nothing.
                try:
                    m = load_manifest(project.store, server.uid, c.number)
                    packs = m.packs()
                    for dm in m.disks:
                        ranges = [(e.offset, e.length) for e in dm.extents] + list(dm.zeros)
                        hashstore.add_forced(project.hashes_dir, disks[dm.index].uid, ranges)
                except (ObjectMissingError, CorruptObjectError):
                    for disk in disks:
                        hashstore.add_forced(project.hashes_dir, disk.uid, None)
            for p in packs:
                project.store.delete(pack_key(server.uid, p))
            with project.db.unit() as u:  # journaled packs go before the journal that names them
                for pack_id in u.cycles.journaled_packs([c.id]):
                    project.store.delete(pack_key(server.uid, pack_id))
                u.cycles.discard(c.id)
            if c.manifest_key:
                project.store.delete(c.manifest_key)
            discarded.append(c.number)
        with project.db.unit() as u:
            u.servers.clear_disk_errors(server.id)
    project.db.event("warning", f"resync: discarded cycles {discarded or 'none'}", server=name)
    return discarded
