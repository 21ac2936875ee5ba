"""Test and planned migration, recovery-point listing and replica verification."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from godwit.engine.mover import apply_server
from godwit.errors import (
    ConflictError,
    GodwitError,
    MigrationError,
    NotFoundError,
    UsageError,
    VerifyMismatchError,
)
from godwit.format.blockhashes import DIGEST
from godwit.format.hashing import block_digest
from godwit.migrate.export import check_format, check_out_dir, export, needed_bytes, refuse_out_dir
from godwit.project.project import Project
from godwit.replicas.base import PointReader
from godwit.state import hashstore
from godwit.state.db import RecoveryPoint, Server
from godwit.state.locks import server_lock

EXTENSIONS = {"raw": "raw", "vhd": "vhd", "qcow2": "qcow2"}


def recovery_points(project: Project, name: str) -> list[dict[str, Any]]:
    server = project.db.server(name)
    return [{"number": rp.number, "sealed": rp.sealed, "consistency": rp.consistency,
             "disk_sizes": rp.disk_sizes} for rp in project.db.recovery_points(server.id)]


def _pick(project: Project, server: Server, which: str) -> RecoveryPoint:
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
    with project.db.unit() as u:
        gone = u.points.find(server.id, n)
    available = ", ".join(str(p.number) for p in points)
    if gone is not None:
        raise NotFoundError(f"recovery point {n} of {server.name} was released (available: {available})",
                            hint="raise replicas.keep_recovery_points to keep more")
    raise NotFoundError(f"recovery point {n} of {server.name} does not exist (available: {available})")


@dataclass
class MigrationResult:
    server: str
    kind: str
    recovery_point: int
    format: str
    files: list[str]
    seconds: float


def _copy_point_to_blobs(project: Project, server: Server, rp: RecoveryPoint, container: str) -> list[str]:
    """The page-blob export: a server-side copy of each disk's snapshot, ready to become a managed disk."""
    from godwit.replicas.pageblob import PageBlobReplica, copy_point_to_blob

    if project.config.replicas.kind != "azure":
        raise UsageError("--format pageblob needs page-blob replicas ([replicas] kind = \"azure\")",
                         hint="use --format vhd to write fixed VHD files instead")
    files: list[str] = []
    for d in project.db.disks(server.id):
        replica = project.replica(server, d)
        try:
            assert isinstance(replica, PageBlobReplica)
            name = f"{server.name}-disk{d.idx}-rp{rp.number}.vhd"
            copy_point_to_blob(replica, rp.number, container, name)
            files.append(f"blob:{container}/{name}")
        finally:
            replica.close()
    return files


def _stamp(path: str) -> str:
    """A file's identity as written: path, inode and modification time. Cleanup deletes only a
    file that is still that very file, never a later migration's output at the same path."""
    st = os.stat(path)
    return f"{path}\0{st.st_ino}\0{st.st_mtime_ns}"


def _remove_output(project: Project, server: Server, entry: str) -> bool:
    if not entry.startswith("blob:"):
        path = entry.partition("\0")[0]
        try:
            if _stamp(path) != entry:
                return False  # replaced or changed since: not ours to delete
        except FileNotFoundError:
            return False
        Path(path).unlink()
        return True
    from godwit.replicas.pageblob import PageBlobReplica

    container, _, name = entry[len("blob:"):].partition("/")
    replica = project.replica(server, project.db.disks(server.id)[0])
    try:
        assert isinstance(replica, PageBlobReplica) and replica._service is not None
        from azure.core.exceptions import ResourceNotFoundError

        try:
            replica._service.get_blob_client(container, name).delete_blob(delete_snapshots="include")
        except ResourceNotFoundError:
            return False
        return True
    finally:
        replica.close()


def _export_point(project: Project, server: Server, rp: RecoveryPoint, fmt: str, out_dir: Path) -> list[str]:
    check_format(fmt)
    if fmt == "pageblob":
        return _copy_point_to_blobs(project, server, rp, str(out_dir))
    disks = project.db.disks(server.id)
    # Every caller (CLI, demo, service) gets the same refusal: never next to a source disk or in
    # the project's own folders.
    refuse_out_dir(out_dir, [d.spec for d in disks], reserved=[project.state_dir, project.cache_dir,
                                                               project.replicas_dir])
    replicas = [project.replica(server, d) for d in disks]
    readers: list[PointReader] = []
    files: list[str] = []
    try:
        for r in replicas:
            readers.append(r.open_point(rp.number))
        check_out_dir(out_dir, sum(needed_bytes(rd, fmt) for rd in readers))
        for d, rd in zip(disks, readers, strict=True):
            target = out_dir / f"{server.name}-disk{d.idx}.{EXTENSIONS[fmt]}"
            export(rd, target, fmt)
            files.append(str(target))
    except BaseException:
        for f in files:
            Path(f).unlink(missing_ok=True)
        raise
    finally:
        for rd in readers:
            rd.close()
        for r in replicas:
            r.close()
    return files


def _stamped(files: list[str]) -> list[str]:
    return [f if f.startswith("blob:") else _stamp(f) for f in files]


def test_migration(project: Project, name: str, *, recovery_point: str = "latest", fmt: str = "raw",
                   out_dir: Path) -> MigrationResult:
    """Write the disks at a recovery point; replication goes on untouched."""
    t0 = time.perf_counter()
    check_format(fmt)
    server = project.db.server(name)
    with server_lock(project.state_dir, name, "apply"):  # the mover waits; cycles go on
        rp = _pick(project, server, recovery_point)
        files = _export_point(project, server, rp, fmt, out_dir)
    with project.db.unit() as u:
        u.migrations.add(server.id, kind="test", recovery_point=rp.number, fmt=fmt, out_dir=str(out_dir),
                         files=_stamped(files))
        u.events.add("info", f"test migration at recovery point {rp.number} written to {out_dir}", server=name)
    return MigrationResult(name, "test", rp.number, fmt, files, time.perf_counter() - t0)


def cleanup(project: Project, name: str) -> list[str]:
    """Remove the files of the server's test migrations."""
    server = project.db.server(name)
    removed: list[str] = []
    with project.db.unit() as u:
        records = u.migrations.outstanding_tests(server.id)
    if not records:
        raise NotFoundError(f"server {name} has no test migration to clean up")
    for rec in records:
        for f in rec.files:
            if _remove_output(project, server, f):
                removed.append(f.partition("\0")[0])
        with project.db.unit() as u:
            u.migrations.mark_cleaned(rec.id)
    project.db.event("info", f"test migration cleaned up ({len(removed)} file(s))", server=name)
    return removed


def planned_migration(project: Project, name: str, *, fmt: str = "raw", out_dir: Path,
                      shutdown_command: str | None = None, shutdown_timeout: float = 600,
                      final_cycle: int | None = None) -> MigrationResult:
    """Shut down (optional), final cycle, apply, write the disks, stop replication, mark migrated.

    ``final_cycle``: the number of a final cycle run elsewhere (an appliance's, already reported);
    then none runs here. A failure at any step leaves the server replicating as before.
    """
    from godwit.engine import lifecycle as replication

    t0 = time.perf_counter()
    check_format(fmt)
    if fmt == "pageblob":
        raise UsageError("a planned migration writes files; copy the final point with a test migration",
                         hint="use --format vhd, or `godwit migrate NAME --test --format pageblob` after it")
    server = project.db.server(name)
    if server.state == "migrated":
        raise ConflictError(f"server {name} is already migrated")
    if server.state not in ("replicating", "paused"):
        raise ConflictError(f"server {name} is not replicating", hint=f"run `godwit replicate start {name}` first")
    check_out_dir(out_dir, 0)
    previous = server.state
    try:
        if shutdown_command:
            try:
                proc = subprocess.run(shutdown_command, shell=True, capture_output=True, text=True,
                                      timeout=shutdown_timeout, check=False)
            except subprocess.TimeoutExpired:
                raise MigrationError(f"the shutdown command did not finish in {shutdown_timeout:.0f}s") from None
            if proc.returncode != 0:
                last = (proc.stderr or proc.stdout).strip().splitlines()
                raise MigrationError(f"the shutdown command failed (exit {proc.returncode})"
                                     + (f": {last[-1]}" if last else ""),
                                     hint="fix it or run without --shutdown-command; replication goes on")
        if final_cycle is None:
            final = replication.cycle(project, name, kind="final")
            if final.resumed:  # it finished an interrupted cycle, whose blocks were read before the shutdown
                final = replication.cycle(project, name, kind="final")
            final_cycle = final.number
        apply_server(project, name)
        server = project.db.server(name)
        with server_lock(project.state_dir, name, "apply"):
            rp = _pick(project, server, "latest")
            if rp.number != final_cycle:
                raise MigrationError(f"the final cycle {final_cycle} was not applied (latest recovery point "
                                     f"is {rp.number})")
            files = _export_point(project, server, rp, fmt, out_dir)
    except GodwitError as exc:
        with project.db.unit() as u:
            u.servers.set_state(server.id, previous)
            u.events.add("error", f"planned migration failed: {exc.message}", server=name)
        raise
    with project.db.unit() as u:  # recorded and migrated together: never migrated without its files
        u.migrations.add(server.id, kind="planned", recovery_point=rp.number, fmt=fmt, out_dir=str(out_dir),
                         files=_stamped(files))
        u.servers.set_state(server.id, "migrated")
        u.events.add("info", f"migrated at recovery point {rp.number} to {out_dir}", server=name)
    return MigrationResult(name, "planned", rp.number, fmt, files, time.perf_counter() - t0)


@dataclass
class VerifyReport:
    server: str
    recovery_point: int
    disks: list[dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(not d["mismatches"] for d in self.disks)


def verify(project: Project, name: str, recovery_point: str = "latest") -> VerifyReport:
    """Re-hash each replica disk at a recovery point and compare with the recorded block hashes."""
    server = project.db.server(name)
    cfg = project.config.replication
    digest = block_digest(cfg.hash)
    bs = cfg.block_size
    report_disks: list[dict[str, Any]] = []
    with server_lock(project.state_dir, name, "apply"):
        rp = _pick(project, server, recovery_point)
        for d in project.db.disks(server.id):
            expected = hashstore.open_digests(project.hashes_dir, d.uid, rp.number, cfg.hash, bs)
            if expected is None:
                raise NotFoundError(f"block hashes of recovery point {rp.number} (disk {d.idx}) are missing",
                                    hint="they are kept for live recovery points only")
            size = expected.size
            replica = project.replica(server, d)
            mismatches: list[tuple[int, int]] = []
            try:
                with replica.open_point(rp.number) as reader:
                    if reader.size != size:
                        mismatches.append((min(reader.size, size), abs(reader.size - size)))
                    step = 64 * bs
                    for off in range(0, min(size, reader.size), step):
                        data = memoryview(reader.read(off, min(step, min(size, reader.size) - off)))
                        want = expected.window(off // bs, -(-(off + len(data)) // bs))  # in disk order
                        for i in range(0, len(data), bs):
                            b = i // bs
                            if digest(data[i:i + bs]) != want[b * DIGEST:(b + 1) * DIGEST]:
                                n = min(bs, len(data) - i)
                                if mismatches and mismatches[-1][0] + mismatches[-1][1] == off + i:
                                    mismatches[-1] = (mismatches[-1][0], mismatches[-1][1] + n)
                                else:
                                    mismatches.append((off + i, n))
            finally:
                replica.close()
                expected.close()
            report_disks.append({"index": d.idx, "size": size, "mismatches": mismatches})
    report = VerifyReport(name, rp.number, report_disks)
    if not report.ok:
        project.db.event("error", f"verify found mismatches at recovery point {rp.number}", server=name)
    return report


def raise_on_mismatch(report: VerifyReport) -> None:
    if not report.ok:
        bad = sum(len(d["mismatches"]) for d in report.disks)
        raise VerifyMismatchError(f"{report.server} recovery point {report.recovery_point}: {bad} mismatching "
                                  "range(s)", hint="run `godwit replicate resync` and a new cycle")
