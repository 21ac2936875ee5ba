"""Taking in a cycle an appliance reports, so that the service's mover can apply and verify it.

Before the state records the cycle, the service checks that what the mover needs is really in the
cache store it reads: the cycle's manifest (with this store's id, the reported parent and the
server's disks; its extents carry their checksums and name the packs) and each disk's block hashes,
which it copies into its own block-hash folder (where ``verify`` and the next resync look) and
then deletes from the store. Nothing is taken on the appliance's word alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

from godwit.engine.reader import load_manifest
from godwit.errors import ConflictError, CorruptObjectError, GodwitError, ObjectMissingError
from godwit.format import blockhashes
from godwit.format.keys import hashes_key, manifest_key
from godwit.project.project import Project
from godwit.service.protocol_models import CycleReport
from godwit.state import hashstore
from godwit.state.appliance_protocol import ApplianceProtocol, ReportedCycle, ReportedDisk
from godwit.state.db import Disk, Server

STATS = ("packs", "bytes_read", "bytes_changed", "bytes_sent", "t_read", "t_cpu", "t_upload", "t_throttle",
         "t_wall")


def digest_of(report: CycleReport) -> str:
    return hashlib.sha256(report.model_dump_json().encode()).hexdigest()


def take_cycle(project: Project, appliance_id: int, appliance: str, report: CycleReport) -> bool:
    """Record the reported cycle as committed; False when this very report was taken before.

    ConflictError (409) when it is out of order, differs from what was taken under its number, or
    its objects are not in the cache store.
    """
    digest = digest_of(report)
    with project.db.unit() as u:
        server = u.servers.get(report.server)
        disks = u.servers.disks(server.id)
        proto = ApplianceProtocol(u.connection)
        if report.number in proto.reported_numbers(server.id):
            # Decided inside accept_cycle: a resend is a no-op, another report a conflict.
            return _accept(project, appliance_id, appliance, server, report, digest, disks)
    _check_objects(project, server, disks, report)
    return _accept(project, appliance_id, appliance, server, report, digest, disks)


def _accept(project: Project, appliance_id: int, appliance: str, server: Server, report: CycleReport,
            digest: str, disks: list[Disk]) -> bool:
    rep = ReportedCycle(
        number=report.number, parent=report.parent, kind=report.kind, consistency=report.consistency,
        manifest_key=report.manifest_key, started=report.started, committed=report.committed,
        stats={k: getattr(report, k) for k in STATS},
        disks=tuple(ReportedDisk(d.index, d.size, d.bytes_read, d.bytes_changed, d.bytes_sent, d.extents)
                    for d in report.disks))
    with project.db.unit() as u:
        new = ApplianceProtocol(u.connection).accept_cycle(appliance_id, server.id, server.name, rep, digest)
        if new:
            u.events.add("info", f"cycle {report.number} committed by appliance {appliance} "
                                 f"({report.consistency} consistency)", server=server.name, cycle=report.number)
    for d in disks:  # the copies in our block-hash folder are the ones kept; a resend may put them again
        with contextlib.suppress(GodwitError):
            project.store.delete(hashes_key(server.uid, d.uid, report.number))
    return new


def _check_objects(project: Project, server: Server, disks: list[Disk], report: CycleReport) -> None:
    n = report.number
    if report.manifest_key != manifest_key(server.uid, n):
        raise ConflictError(f"cycle {n} of {server.name}: the manifest key {report.manifest_key!r} is not the "
                            f"server's ({manifest_key(server.uid, n)})")
    try:
        m = load_manifest(project.store, server.uid, n, store_id=project.store_id())
    except (ObjectMissingError, CorruptObjectError) as exc:
        raise ConflictError(f"cycle {n} of {server.name} cannot be taken: {exc.message}",
                            hint="the appliance must write into the cache store the service reads") from None
    if m.parent != report.parent or m.consistency != report.consistency:
        raise ConflictError(f"cycle {n} of {server.name}: the report does not match its manifest")
    if sorted(d.index for d in m.disks) != [d.idx for d in disks] or \
            sorted(d.index for d in report.disks) != [d.idx for d in disks]:
        raise ConflictError(f"cycle {n} of {server.name} does not cover the server's {len(disks)} disk(s)")
    sizes = {d.index: d.size for d in m.disks}
    for d in disks:
        _import_hashes(project, server, d, n, m.hash, m.block_size, sizes[d.idx])


def _import_hashes(project: Project, server: Server, disk: Disk, number: int, algorithm: str, bs: int,
                   size: int) -> None:
    """Copy one disk's block hashes from the store into the service's block-hash folder, checked."""
    final = hashstore.path(project.hashes_dir, disk.uid, number)
    key = hashes_key(server.uid, disk.uid, number)
    try:
        data = project.store.get(key)
    except ObjectMissingError:
        if final.exists():  # taken by an attempt whose state update did not happen
            return
        raise ConflictError(f"cycle {number} of {server.name}: the block hashes of disk {disk.idx} are not in "
                            f"the cache store ({key})", hint="the appliance puts them before it reports") from None
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=".in-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        got, _digests = blockhashes.read(Path(tmp), algorithm, bs)
        if got != size:
            raise CorruptObjectError(f"they describe {got} bytes, the manifest {size}")
        os.replace(tmp, final)
    except CorruptObjectError as exc:
        raise ConflictError(f"cycle {number} of {server.name}: the block hashes of disk {disk.idx} are damaged: "
                            f"{exc.message}") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
