"""PageBlobReplica against a real Azurite (tests/azurite.py)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from godwit.errors import NotFoundError, ReplicaError
from godwit.format import vhd
from godwit.replicas.pageblob import PageBlobReplica, copy_point_to_blob, open_pageblob_replica
from tests.azurite import Azurite

MIB = 1 << 20

pytestmark = pytest.mark.azure


# -- the replica ---------------------------------------------------------------------------------------------

def blob_bytes(azurite: Azurite, container: str, name: str, snapshot: str | None = None) -> bytes:
    with azurite.service() as svc:
        data: bytes = svc.get_blob_client(container, name, snapshot=snapshot).download_blob().readall()
        return data


def test_writes_zero_points_and_layout(azure_replica_factory: Callable[[str], PageBlobReplica],
                                       azurite: Azurite, azure_container: str) -> None:
    size = 3 * MIB + 1000  # not a whole MiB, not even a whole page
    r = azure_replica_factory("srv-disk0")
    assert r.size == 0 and r.points() == []
    model = bytearray(size)

    def write(offset: int, data: bytes) -> None:
        r.write(offset, data)
        model[offset:offset + len(data)] = data

    r.begin(1, [(0, size)], size)
    assert r.size == size
    write(0, os.urandom(MIB))
    write(MIB + 3, os.urandom(700))  # inside one page and across the next
    write(2 * MIB - 100, os.urandom(5 * 512 + 37))  # unaligned both ends, an aligned middle
    write(size - 10, b"0123456789")  # the last partial page
    write(123, b"x")
    r.seal(1)
    assert r.points() == [1]
    point1 = bytes(model)

    r.begin(2, [(0, MIB)], size)
    r.zero(100, MIB)  # unaligned zero over data
    model[100:100 + MIB] = bytes(MIB)
    write(2 * MIB, bytes(MIB // 2) + os.urandom(1000))  # zeros inside data
    r.seal(2)
    assert r.points() == [1, 2]

    # The blob is the disk rounded up to a MiB, then the footer.
    blob = blob_bytes(azurite, azure_container, "srv-disk0.vhd")
    rounded = vhd.rounded_size(size)
    assert len(blob) == rounded + 512
    assert blob[:size] == bytes(model) and blob[size:rounded] == bytes(rounded - size)
    footer = vhd.parse_footer(blob[rounded:])
    assert footer["current_size"] == rounded and footer["disk_type"] == 2

    with r.open_point(1) as p1:
        assert p1.size == size
        assert p1.read(0, size) == point1
        assert p1.read(size - 10, 10) == point1[-10:]
        with pytest.raises(ReplicaError, match="past the end"):
            p1.read(size - 10, 11)
        ranges = p1.allocated()
        assert ranges is not None and all(o + n <= size for o, n in ranges)
        assert all(point1[o:o + n] == bytes(n) for o, n in _holes(ranges, size))
    with r.open_point(2) as p2:
        assert p2.read(0, size) == bytes(model)

    with pytest.raises(ReplicaError, match="live disk"):
        r.release(2)
    r.release(1)
    r.release(1)  # idempotent
    assert r.points() == [2]
    with pytest.raises(NotFoundError):
        r.open_point(1)
    with pytest.raises(NotFoundError):
        r.open_point(7)
    with pytest.raises(ReplicaError, match="outside"):
        r.write(size - 1, b"ab")


def _holes(ranges: list[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    holes, pos = [], 0
    for o, n in sorted(ranges):
        if o > pos:
            holes.append((pos, o - pos))
        pos = max(pos, o + n)
    if pos < size:
        holes.append((pos, size - pos))
    return holes


def test_queued_writes_keep_their_order(azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    """Write-behind: overlapping writes and zeros issued back to back land in issue order."""
    import random

    rnd = random.Random(7)
    size = 2 * MIB + 300
    r = azure_replica_factory("order")
    r.begin(1, [(0, size)], size)
    model = bytearray(size)
    for _ in range(100):
        offset = rnd.randrange(0, size - 1)
        if rnd.random() < 0.2:  # a few big ones, many small ones clustered on few pages
            length = rnd.randrange(1, min(size - offset, 700 * 1024) + 1)
        else:
            offset = rnd.choice([0, 1000, 4096, MIB - 3, size - 600])
            length = rnd.randrange(1, min(size - offset, 3000) + 1)
        if rnd.random() < 0.25:
            r.zero(offset, length)
            model[offset:offset + length] = bytes(length)
        else:
            buf = bytearray(rnd.randbytes(length))
            r.write(offset, memoryview(buf))
            model[offset:offset + length] = buf
            buf[:] = bytes(length)  # the caller reuses its buffer at once
    r.seal(1)
    with r.open_point(1) as p:
        assert p.read(0, size) == bytes(model)


def test_a_failed_queued_write_is_raised(azurite: Azurite, azure_container: str,
                                         azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("fails")
    r.begin(1, [], MIB)
    with azurite.service() as svc:
        svc.get_blob_client(azure_container, "fails.vhd").delete_blob()
    with pytest.raises(ReplicaError, match="writing 4096 bytes at 0"):
        r.write(0, b"x" * 4096)
        r.seal(1)
    with pytest.raises(ReplicaError):
        r.seal(1)  # the failure sticks until the cycle is rolled back
    r.abort(1)
    assert r.points() == [] and r.size == 0


def test_zero_runs_stay_sparse(azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("sparse")
    size = 8 * MIB
    r.begin(1, [(0, size)], size)
    data = os.urandom(MIB) + bytes(5 * MIB) + os.urandom(MIB)
    r.write(0, data)
    r.seal(1)
    with r.open_point(1) as p:
        allocated = p.allocated()
        assert p.read(0, len(data)) == data
    assert allocated == [(0, MIB), (6 * MIB, MIB)]


def test_a_new_process_finds_size_and_points(azurite: Azurite, azure_container: str, tmp_path: Path,
                                            azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("reopen")
    r.begin(1, [], 2 * MIB)
    r.write(4096, b"a" * 4096)
    r.seal(1)
    r.begin(2, [], 2 * MIB)
    r.write(4096, b"b" * 4096)
    r.seal(2)
    again = open_pageblob_replica(azurite.options(azure_container), tmp_path, "reopen")
    try:
        assert again.size == 2 * MIB and again.points() == [1, 2]
        with again.open_point(1) as p:
            assert p.read(4096, 4096) == b"a" * 4096
        again.begin(2, [], 2 * MIB)  # a sealed cycle applied again (after a crash) changes nothing
        again.write(4096, b"b" * 4096)
        again.seal(2)
        assert again.points() == [1, 2]
    finally:
        again.close()


def test_growing_moves_the_footer(azurite: Azurite, azure_container: str,
                                  azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("grow")
    r.begin(1, [], MIB)
    r.write(0, b"z" * 512)
    r.seal(1)
    r.begin(2, [(MIB, MIB)], 2 * MIB + 512)
    r.begin(2, [(MIB, MIB)], 2 * MIB + 512)  # idempotent
    assert r.size == 2 * MIB + 512
    blob = blob_bytes(azurite, azure_container, "grow.vhd")
    assert len(blob) == 3 * MIB + 512
    assert blob[MIB:3 * MIB] == bytes(2 * MIB)  # the old footer reads as zeros now
    assert vhd.parse_footer(blob)["current_size"] == 3 * MIB
    assert blob[:512] == b"z" * 512
    with r.open_point(1) as p:
        assert p.size == MIB
    with pytest.raises(ReplicaError, match="cannot shrink"):
        r.begin(3, [], MIB)


def test_begin_after_a_crash_mid_resize(azurite: Azurite, azure_container: str,
                                        azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("crash")
    r.begin(1, [], MIB)
    r.seal(1)
    with azurite.service() as svc:  # the blob was resized, then the process died
        svc.get_blob_client(azure_container, "crash.vhd").resize_blob(2 * MIB + 512)
    fresh = azure_replica_factory("crash")
    fresh.begin(2, [], 2 * MIB)
    blob = blob_bytes(azurite, azure_container, "crash.vhd")
    assert blob[MIB:2 * MIB] == bytes(MIB) and vhd.parse_footer(blob)["current_size"] == 2 * MIB


def test_abort_restores_the_last_point_bit_for_bit(
        azurite: Azurite, azure_container: str, azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("abort")
    r.begin(1, [(0, MIB + 512)], MIB + 512)
    r.write(0, os.urandom(MIB))
    r.seal(1)
    sealed = blob_bytes(azurite, azure_container, "abort.vhd")
    r.begin(2, [(0, 3 * MIB)], 3 * MIB)  # grows: the footer moves
    r.write(100, os.urandom(2 * MIB))
    r.zero(0, 512)
    r.close()  # the process dies mid-cycle; a new one rolls back
    again = azure_replica_factory("abort")
    again.abort(2)
    assert again.size == MIB + 512 and again.points() == [1]
    assert blob_bytes(azurite, azure_container, "abort.vhd") == sealed
    again.abort(2)  # idempotent
    again.abort(1)  # a sealed cycle: nothing to roll back
    assert blob_bytes(azurite, azure_container, "abort.vhd") == sealed
    # The cycle is applied again after the rollback and sealed; point 1 stays as it was.
    again.begin(2, [(0, 3 * MIB)], 3 * MIB)
    again.write(0, b"y" * 512)
    again.seal(2)
    assert again.points() == [1, 2]
    with again.open_point(1) as p:
        assert p.read(0, MIB + 512) == sealed[:MIB + 512]
    with azurite.service() as svc:  # the cycle records are gone once sealed
        names = list(svc.get_container_client(azure_container).list_blob_names())
    assert names == ["abort.vhd"]


def test_abort_of_the_first_cycle_leaves_no_disk(azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("first")
    r.begin(1, [(0, MIB)], MIB)
    r.write(0, b"x" * 4096)
    r.abort(1)
    assert r.size == 0 and r.points() == []
    r.begin(1, [(0, MIB)], MIB)
    r.seal(1)
    with r.open_point(1) as p:
        assert p.read(0, 4096) == bytes(4096)


def test_copy_point_to_blob(azurite: Azurite, azure_container: str,
                            azure_replica_factory: Callable[[str], PageBlobReplica]) -> None:
    r = azure_replica_factory("copysrc")
    r.begin(1, [], 2 * MIB)
    data = os.urandom(MIB)
    r.write(MIB, data)
    r.seal(1)
    r.begin(2, [], 2 * MIB)
    r.write(MIB, bytes(MIB))
    r.seal(2)
    dest = azurite.new_container("dest")
    try:
        url = copy_point_to_blob(r, 1, dest, "migrated-disk0.vhd")
        assert url.endswith(f"/{dest}/migrated-disk0.vhd") and "sig=" not in url
        blob = blob_bytes(azurite, dest, "migrated-disk0.vhd")
        assert blob[MIB:2 * MIB] == data and vhd.parse_footer(blob)["current_size"] == 2 * MIB
    finally:
        azurite.delete_container(dest)


def test_remove(azure_replica_factory: Callable[[str], PageBlobReplica], azurite: Azurite,
                azure_container: str) -> None:
    r = azure_replica_factory("gone")
    r.begin(1, [], MIB)
    r.seal(1)
    r.remove()
    r.remove()
    with azurite.service() as svc:
        assert list(svc.get_container_client(azure_container).list_blobs(include=["snapshots"])) == []
    assert r.points() == []


def test_copy_fallback_equals_the_server_side_copy(azurite: Azurite, azure_container: str,
                                                   tmp_path: Path) -> None:
    """The page-by-page copy (used when the service refuses a server-side copy) gives the very blob
    the service's own copy gives, for a disk whose size is not a multiple of 512: data, the padded
    last page, zeros where nothing was written, and the point's footer."""
    from godwit.replicas.pageblob.copy import copy_ranges

    size = MIB - 100
    head, tail = os.urandom(3000), os.urandom(1000)
    r = open_pageblob_replica(azurite.options(azure_container), tmp_path, "odd")
    try:
        r.begin(1, [(0, 3000), (size - 1000, 1000)], size)
        r.write(0, head)
        r.write(size - 1000, tail)
        r.seal(1)
        r.begin(2, [(0, 3000)], size)
        r.write(0, bytes(3000))  # the live disk moves on; the copy is of point 1
        r.seal(2)
        copy_ranges(r.snapshot_reader(1), r._service.get_blob_client(azure_container, "by-pages.vhd"), r)
        copy_point_to_blob(r, 1, azure_container, "by-service.vhd")
    finally:
        r.close()
    by_pages = blob_bytes(azurite, azure_container, "by-pages.vhd")
    by_service = blob_bytes(azurite, azure_container, "by-service.vhd")
    rounded = vhd.rounded_size(size)
    assert len(by_pages) == rounded + vhd.FOOTER_SIZE
    assert by_pages[:3000] == head and by_pages[size - 1000:size] == tail
    assert by_pages[3000:size - 1000] == bytes(size - 4000) and by_pages[size:rounded] == bytes(rounded - size)
    assert vhd.parse_footer(by_pages)["current_size"] == rounded
    assert by_pages == by_service
