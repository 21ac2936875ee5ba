"""Running one cycle of one server: the states a cycle goes through, and who is told what.

A cycle is opened (a state row, with the settings it is made with), its disks are read along the
change tracker's regions and packed (``pipeline``, ``packer``), and it is committed (``commit``).
An open cycle found at start (the process died) is resumed: its journaled packs are not sent
again. One that was started with another block size, hash or tracker cannot be resumed: it is
discarded (an event says so) and a new cycle starts with the settings of godwit.toml.
The shape is in docs/architecture.md, "A cycle".
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from godwit.engine.cycle import changes, commit
from godwit.engine.cycle.packer import Packer
from godwit.engine.cycle.pipeline import HashTarget, Pipeline
from godwit.engine.cycle.stats import CycleResult, ProgressFn, make_result, stage_stats
from godwit.engine.cycle.work import DiskWork
from godwit.errors import GodwitError, SourceError
from godwit.format.hashing import block_digest
from godwit.format.keys import pack_key
from godwit.project.project import Project
from godwit.sources import DiskSource, open_source
from godwit.sources.consistency import combine as combine_consistency
from godwit.state import cycles
from godwit.state.cycles import CycleSettings
from godwit.state.db import Cycle, Disk, Server
from godwit.state.locks import server_lock
from godwit.state.network import NetworkRecords
from godwit.trackers import ChangeTracker, build

log = logging.getLogger("godwit.cycle")


class CycleRunner:
    def __init__(self, project: Project, server: Server, *, progress: ProgressFn | None = None,
                 workers: int = 2, tracker: ChangeTracker | None = None) -> None:
        self.project = project
        self.server = server
        self.cfg = project.config
        self.bs = self.cfg.replication.block_size
        self.tracker = tracker if tracker is not None else build(self.cfg.replication.tracker)
        self.settings = CycleSettings(self.bs, self.cfg.replication.hash, self.tracker.name)
        self.progress = progress
        self.workers = workers
        self.packs_uploaded = 0
        self._held0 = 0.0
        self._packer: Packer | None = None
        self._upool: ThreadPoolExecutor | None = None

    # -- entry point -------------------------------------------------------------------------

    def run(self, kind: str = "delta") -> CycleResult:
        # Waits out the mover's short orphan collection; a cycle in another process still refuses.
        with server_lock(self.project.state_dir, self.server.name, "cycle", wait=30):
            return self._run(kind)

    def _run(self, kind: str) -> CycleResult:
        db = self.project.db
        store_id = self.project.store_id()
        started = time.perf_counter()
        every = db.cycles(self.server.id)  # one query for the open and the committed ones
        open_cycles = [c for c in every if c.state == "open"]
        if open_cycles:
            m = commit.stored_manifest(self.project.store, self.server, open_cycles[0])
            if m is not None:  # died between the manifest's put and the state update
                commit.mark_committed(db, self.project.hashes_dir, self.server, open_cycles[0], m, {})
                self._tell_committed(open_cycles[0])
                return make_result(self.server.name, db.cycle(self.server.id, open_cycles[0].number),
                                   resumed=True, packs_uploaded=0, reused=0, warnings=[], works=[])
            if not self._resumable(open_cycles[0]):
                open_cycles = []
        committed = [c for c in every if c.state in ("committed", "applied")]
        resumed = bool(open_cycles)
        if resumed:
            cyc = open_cycles[0]
        else:
            cyc = cycles.open_cycle(db, self.server.id, kind if committed else "initial", self.settings)
        parent = committed[-1].number if committed else None
        disks = db.disks(self.server.id)
        sources: list[DiskSource] = []
        warnings: list[str] = []
        works: list[DiskWork] = []
        closer = _Closer(sources)
        views: list[tuple[str, str]] = []

        def reads_done() -> None:
            # After the reads: a live disk knows its consistency once its view is frozen. Then the
            # sources close on a thread while the last pack and the hash files are made durable.
            views.append(combine_consistency(sources))
            closer.start()

        try:
            try:
                for d in disks:  # temporaries (clones, snapshots) named per server, disk and cycle
                    sources.append(open_source(Path(d.spec), d.format, snapshot_dir=self.project.snapshots_dir,
                                               temp_tag=f"{self.server.uid}-d{d.idx}-c{cyc.number}"))
                works = [self._prepare(d, s, parent, warnings) for d, s in zip(disks, sources, strict=True)]
                reused = changes.apply_journal(cycles.journal_rows(db, cyc.id), works, self.bs, cyc.number,
                                               self.server.name)
                log.info("%s cycle %d (%s): %s, %d disk(s), %d journaled pack(s) reused", self.server.name,
                         cyc.number, cyc.kind, "resuming" if resumed else "starting", len(works), reused)
                t_read, t_cpu, t_upload = self._scan_and_upload(cyc, works, reads_done)
                consistency, detail = views[0]
                if reused and consistency != "none":
                    # Journaled packs were read from the dead run's snapshot, the rest from a new one.
                    consistency, detail = "none", "not point-in-time (resumed: data from two views)"
                    warnings.append("this cycle resumes an interrupted one: its data comes from two snapshots, "
                                    "so it is not point-in-time (consistency none); the next cycle will be")
            finally:
                try:
                    closer.finish()  # joins the thread (or closes now); a close that failed fails the cycle
                finally:
                    for s in sources:  # after close: releasing a snapshot can warn too
                        warnings.extend(s.warnings)
                    for w in warnings:
                        db.event("warning", w, server=self.server.name, cycle=cyc.number)
            self._commit(cyc, works, parent, (consistency, detail), store_id,
                         stage_stats(works, 0, t_read=t_read, t_cpu=t_cpu, t_upload=t_upload, t_throttle=0.0,
                                     t_wall=0.0), started)
        except BaseException:
            with contextlib.suppress(Exception):  # the uploads' own error, if any, is not the one to report
                self._journaled()
            self._tell_failed(cyc, works)
            raise
        return make_result(self.server.name, db.cycle(self.server.id, cyc.number), resumed=resumed,
                           packs_uploaded=self.packs_uploaded, reused=reused, warnings=warnings, works=works)

    # -- open cycles made with other settings (issue 8.7) -------------------------------------

    def _resumable(self, cyc: Cycle) -> bool:
        """Whether the open cycle was made with today's settings; if not, discard it, say so."""
        db = self.project.db
        was = cycles.settings_of(db, cyc.id)
        if was is None:  # opened before settings were kept: its journal tells the block size
            if changes.journal_fits(cycles.journal_rows(db, cyc.id), self.bs):
                return True
            what = "another block size"
        elif was == self.settings:
            return True
        else:
            what = was.describe()
        packs = cycles.discard_open(db, cyc.id)
        for p in packs:  # deleting a missing object is not an error
            self.project.store.delete(pack_key(self.server.uid, p))
        msg = (f"cycle {cyc.number} was interrupted while made with {what}; godwit.toml now says "
               f"{self.settings.describe()}. Its {len(packs)} stored pack(s) are discarded and a new cycle "
               "starts with the new settings (a changed block size or hash resends the whole disk)")
        log.warning("%s: %s", self.server.name, msg)
        db.event("warning", msg, server=self.server.name, cycle=cyc.number)
        return False

    # -- preparation -------------------------------------------------------------------------

    def _prepare(self, disk: Disk, source: DiskSource, parent: int | None, warnings: list[str]) -> DiskWork:
        size = source.size
        db = self.project.db
        if size < disk.size and parent is not None:
            msg = (f"disk {disk.idx} ({disk.spec}) shrank from {disk.size} to {size} bytes; "
                   "replication is paused for this server")
            db.set_disk(disk.id, state="error", error=msg)
            db.set_server_state(self.server.id, "paused", msg)
            db.event("error", msg, server=self.server.name, disk=disk.idx)
            raise SourceError(msg, hint="restore the disk's size (godwit never truncates a replica), "
                                        f"or remove and re-add server {self.server.name}")
        if size > disk.size and parent is not None:
            warnings.append(f"disk {disk.idx} grew from {disk.size} to {size} bytes; the new size is replicated")
        if parent is None:
            return changes.new_work(disk, source, None, None, 0, 0, [], self.bs)
        base, previous_size, usable, forced = changes.load_base(
            self.project.hashes_dir, disk, parent, self.cfg.replication.hash, self.bs, size, warnings)
        return changes.new_work(disk, source, parent, base, previous_size, usable, forced, self.bs)

    # -- the pipeline ------------------------------------------------------------------------

    def _scan_and_upload(self, cyc: Cycle, works: list[DiskWork],
                         reads_done: Callable[[], None]) -> tuple[float, float, float]:
        """Read, pack and store every change; returns the stage timers (read, cpu, upload).
        ``reads_done`` is called once the last read's result is taken (before the last pack).
        Every pack is stored on return; their journal rows may still be on their way
        (``_journaled`` waits for them)."""
        bucket = self.project.bucket
        self._held0 = bucket.held_seconds if bucket else 0.0
        rep = self.cfg.replication
        pipeline = Pipeline(tracker=self.tracker, bs=self.bs, digest=block_digest(rep.hash),
                            compression_level=rep.compression_level, workers=self.workers, progress=self.progress,
                            hashes=HashTarget(self.project.hashes_dir, cyc.number, rep.hash))
        upool = self._upool = ThreadPoolExecutor(rep.upload_concurrency, thread_name_prefix="godwit-upload")
        packer = self._packer = Packer(store=self.project.store, db=self.project.db, server_uid=self.server.uid,
                                       server_name=self.server.name, cyc=cyc, works=works, bs=self.bs,
                                       pack_size=self.cfg.cache.pack_size_mib << 20, upool=upool,
                                       concurrency=rep.upload_concurrency)
        try:
            pipeline.run(works, packer, reads_done=reads_done)
        finally:
            self.packs_uploaded = packer.packs_uploaded
        return pipeline.t_read, pipeline.t_cpu, packer.t_upload

    def _journaled(self) -> None:
        """Wait for every pack's journal row (raising the first error), and end the upload pool."""
        packer, upool = self._packer, self._upool
        self._packer = self._upool = None
        try:
            if packer is not None:
                packer.journaled()
        finally:
            if upool is not None:
                upool.shutdown(wait=True)

    # -- commit ------------------------------------------------------------------------------

    def _commit(self, cyc: Cycle, works: list[DiskWork], parent: int | None, consistency: tuple[str, str],
                store_id: str, stats: dict[str, float | int], started: float) -> None:
        rep = self.cfg.replication
        m = commit.build_manifest(self.server, cyc, works, parent=parent, consistency=consistency[0],
                                  store_id=store_id, bs=self.bs, algorithm=rep.hash)
        m = dataclasses.replace(m, consistency_detail=consistency[1])
        commit.write_hashes(self.project.hashes_dir, works, cyc.number, rep.hash, self.bs)
        commit.put_manifest(self.project.store, self.server, m)
        bucket = self.project.bucket
        held = (bucket.held_seconds if bucket else 0.0) - self._held0
        stats = {**stats, "packs": len(m.packs()), "t_throttle": held, "t_wall": time.perf_counter() - started}
        # The manifest is stored: the cycle exists (a run that dies now only finishes the
        # bookkeeping, and telling the tracker twice is harmless). So the tracker is told on a
        # thread while the state's transaction commits: QEMU's round trips beside SQLite's fsync.
        told: list[tuple[int, str]] = []
        teller = threading.Thread(target=lambda: told.extend(self._tell_tracker(cyc, works)),
                                  name="godwit-tell", daemon=True)
        teller.start()
        try:
            self._journaled()  # the last pack's journal row was written beside the manifest's put
            commit.mark_committed(self.project.db, self.project.hashes_dir, self.server, cyc, m, stats, works)
        finally:
            teller.join()  # before a failure's tracker call: they share QEMU's monitor session
            self._record_untold(cyc, told)

    # -- telling the tracker -------------------------------------------------------------------

    def _tell_committed(self, cyc: Cycle, works: list[DiskWork] | None = None) -> None:
        self._record_untold(cyc, self._tell_tracker(cyc, works))

    def _tell_tracker(self, cyc: Cycle, works: list[DiskWork] | None) -> list[tuple[int, str]]:
        """Tell the tracker that ``cyc`` committed; returns (disk index, message) of what failed
        (the cycle is durable: a tracker that forgets nothing only rereads more)."""
        tracked = [w.tracked for w in works] if works else [
            changes.tracked(d) for d in self.project.db.disks(self.server.id)]
        untold: list[tuple[int, str]] = []
        for t in tracked:
            try:
                self.tracker.committed(t, cyc.number)
            except Exception as exc:
                untold.append((t.index, f"tracker {self.tracker.name} was not told that cycle {cyc.number} "
                                        f"committed: {exc}"))
        return untold

    def _record_untold(self, cyc: Cycle, untold: list[tuple[int, str]]) -> None:
        for index, msg in untold:
            log.warning("%s: %s", self.server.name, msg)
            self.project.db.event("warning", msg, server=self.server.name, disk=index, cycle=cyc.number)

    def _tell_failed(self, cyc: Cycle, works: list[DiskWork]) -> None:
        for w in works:
            try:
                self.tracker.failed(w.tracked, cyc.number)
            except Exception:  # the cycle's own error is the one to report
                log.exception("%s: tracker %s failed to keep the changes of cycle %d", self.server.name,
                              self.tracker.name, cyc.number)


class _Closer:
    """Closes a cycle's sources on a thread of its own once the reads are done (releasing a live
    disk's view costs QEMU round trips; a snapshot's, a helper process), so that this overlaps
    the last pack's put and the hash files' fsync. ``finish`` joins it, or closes the sources
    there and then when the reads never finished; the first error a close raised is raised."""

    def __init__(self, sources: list[DiskSource]) -> None:
        self.sources = sources
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._close, name="godwit-close", daemon=True)
        self.thread.start()

    def _close(self) -> None:
        for s in self.sources:
            try:
                s.close()
            except BaseException as exc:  # every source is closed; the first error is raised in finish
                self.error = self.error or exc

    def finish(self) -> None:
        if self.thread is None:
            self._close()
        else:
            self.thread.join()
        if self.error is not None:
            raise self.error


def run_cycle(project: Project, name: str, kind: str = "delta", *, progress: ProgressFn | None = None,
              tracker: ChangeTracker | None = None) -> CycleResult:
    server = project.db.server(name)
    if server.state == "migrated":
        raise GodwitError(f"server {name} is migrated; replication has ended")
    if project.router is not None:
        _acknowledge_if_checked(project)
        project.router.refuse_if_changed()  # the cache account's answer changed: refuse until acknowledged
    return CycleRunner(project, server, progress=progress, tracker=tracker).run(kind)


def _acknowledge_if_checked(project: Project) -> None:
    """A `godwit network check` that passed after the cache account's answer changed is the person's
    word that the new answer is right: accept it (a long `replicate run` would otherwise refuse until
    restarted). The router then re-checks the new answer on the next request, so a public address
    is still refused."""
    router = project.router
    assert router is not None
    changes_seen = router.changes()
    if not changes_seen:
        return
    with project.db.unit() as u:
        check = NetworkRecords(u.connection).last_check()
    if check and check.get("ok") and float(check.get("at") or 0) > changes_seen[-1].at:
        log.warning("%s; accepted after the network check of %s", changes_seen[-1].describe(),
                    time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(check["at"]))))
        router.acknowledge()
