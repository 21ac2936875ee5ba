"""The fixed-VHD footer, and PageBlobReplica against a real Azurite (tests/azurite.py)."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from godwit.errors import ConfigError, CorruptObjectError, NotFoundError, ReplicaError
from godwit.format import vhd
from godwit.replicas.pageblob import PageBlobReplica, copy_point_to_blob, open_pageblob_replica
from tests.azurite import Azurite

MIB = 1 << 20

pytestmark = pytest.mark.azure


def qemu_img() -> str:
    path = shutil.which("qemu-img")
    if not path:
        pytest.fail("qemu-img is missing: apt-get install qemu-utils", pytrace=False)
    return path


# -- the footer ------------------------------------------------------------------------------------------

def test_footer_fields() -> None:
    uuid = bytes(range(16))
    ts = 1_800_000_000
    raw = vhd.footer(3 * MIB, uuid=uuid, timestamp=ts)
    assert len(raw) == 512
    assert raw[:8] == b"conectix"
    assert raw[28:32] == b"qem2" and raw[36:40] == b"Wi2k"
    assert struct.unpack(">Q", raw[16:24])[0] == 0xFFFFFFFFFFFFFFFF
    assert raw[85:] == bytes(427)
    f = vhd.parse_footer(raw)
    assert f["features"] == 2 and f["version"] == 0x00010000 and f["disk_type"] == 2
    assert f["original_size"] == f["current_size"] == 3 * MIB
    assert f["timestamp"] == ts and f["uuid"] == uuid and f["saved_state"] == 0
    assert (f["cylinders"], f["heads"], f["sectors_per_track"]) == vhd.chs(3 * MIB)
    # The checksum is the ones' complement of the byte sum of the rest.
    assert f["checksum"] == (~(sum(raw) - sum(raw[64:68])) & 0xFFFFFFFF)
    assert vhd.footer(3 * MIB, uuid=uuid, timestamp=ts) == raw  # deterministic given uuid and time


@pytest.mark.parametrize(("size", "geometry"), [
    (1 * MIB, (30, 4, 17)),  # small disks: 17 sectors per track, at least 4 heads
    (127 * MIB, (1019, 15, 17)),
    (1 << 30, (2080, 16, 63)),
    (200 << 30, (65535, 16, 255)),  # beyond CHS: clamped to the maximum
])
def test_chs_by_the_spec(size: int, geometry: tuple[int, int, int]) -> None:
    assert vhd.chs(size) == geometry


def test_rounded_size() -> None:
    assert [vhd.rounded_size(n) for n in (0, 1, MIB - 1, MIB, MIB + 1)] == [0, MIB, MIB, MIB, 2 * MIB]
    with pytest.raises(ValueError):
        vhd.rounded_size(-1)


def test_footer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        vhd.footer(1000)
    with pytest.raises(ValueError):
        vhd.footer(MIB, uuid=b"short")
    good = vhd.footer(MIB)
    with pytest.raises(CorruptObjectError, match="cookie"):
        vhd.parse_footer(b"x" * 8 + good[8:])
    flipped = bytearray(good)
    flipped[50] ^= 1
    with pytest.raises(CorruptObjectError, match="checksum"):
        vhd.parse_footer(bytes(flipped))
    with pytest.raises(CorruptObjectError, match="512 bytes"):
        vhd.parse_footer(good[:100])
    assert vhd.parse_footer(b"data" * 100 + good)["current_size"] == MIB  # the end of a file works


@pytest.mark.parametrize("size", [3 * MIB, 127 * MIB + 4096])
def test_qemu_reads_our_vhd(size: int, tmp_path: Path) -> None:
    """qemu-img takes the size from our footer (creator "qem2"), not from the CHS geometry."""
    qemu = qemu_img()
    raw = tmp_path / "disk.raw"
    image = tmp_path / "disk.vhd"
    rounded = vhd.rounded_size(size)
    data = bytearray(rounded)
    data[:1 * MIB] = os.urandom(MIB)
    data[size - 4096:size] = os.urandom(4096)
    raw.write_bytes(bytes(data))
    image.write_bytes(bytes(data) + vhd.footer(rounded))
    info = subprocess.run([qemu, "info", "-f", "vpc", "--output=json", str(image)], check=True,
                          capture_output=True, text=True).stdout
    import json

    assert json.loads(info)["virtual-size"] == rounded
    cmp = subprocess.run([qemu, "compare", "-F", "vpc", "-f", "raw", str(raw), str(image)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr


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


def test_direct_upload_sas_url(azurite: Azurite, azure_container: str) -> None:
    """A managed disk opened for upload is a fixed-size page blob behind a blob SAS URL."""
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    size = 2 * MIB
    with azurite.service() as svc:
        svc.get_blob_client(azure_container, "md-upload").create_page_blob(size + 512)
    sas = generate_blob_sas(azurite.account, azure_container, "md-upload", account_key=azurite.key,
                            permission=BlobSasPermissions(read=True, write=True),
                            expiry=datetime.now(UTC) + timedelta(hours=1))
    url = f"{azurite.blob_url}/{azure_container}/md-upload?{sas}"
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    r = PageBlobReplica.from_sas_url(url, ca_file=azurite.ca_file, retries=0)
    try:
        assert signature not in r.description and r.size == size
        with pytest.raises(ReplicaError, match="needs") as info:
            r.begin(1, [], 3 * MIB)
        assert "--upload-size-bytes" in (info.value.hint or "")
        r.begin(1, [], size)
        data = os.urandom(MIB + 100)
        r.write(1000, data)
        r.seal(1)
        assert r.points() == []
        blob = blob_bytes(azurite, azure_container, "md-upload")
        assert blob[1000:1000 + len(data)] == data and vhd.parse_footer(blob)["current_size"] == size
        with pytest.raises(ReplicaError):
            r.remove()
        with pytest.raises(ReplicaError, match="cannot roll back"):
            r.abort(2)
    finally:
        r.close()
    with pytest.raises(ReplicaError, match="no sig="):
        PageBlobReplica.from_sas_url(f"{azurite.blob_url}/{azure_container}/md-upload")


def test_refused_sas_url_error_leaks_nothing(azurite: Azurite, azure_container: str) -> None:
    """A SAS the service refuses (signed with another key) names the account, never the signature."""
    import base64

    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    with azurite.service() as svc:
        svc.get_blob_client(azure_container, "md-old").create_page_blob(MIB + 512)
    now = datetime.now(UTC)
    sas = generate_blob_sas(azurite.account, azure_container, "md-old",
                            account_key=base64.b64encode(os.urandom(64)).decode(),
                            permission=BlobSasPermissions(read=True, write=True), start=now - timedelta(hours=2),
                            expiry=now + timedelta(hours=1))
    signature = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    r = PageBlobReplica.from_sas_url(f"{azurite.blob_url}/{azure_container}/md-old?{sas}",
                                     ca_file=azurite.ca_file, retries=0)
    try:
        with pytest.raises(ReplicaError, match=f"account {azurite.account} .* refused the credential") as info:
            r.begin(1, [], MIB)
        assert signature not in f"{info.value} {info.value.hint}"
        assert "DefaultAzureCredential" not in (info.value.hint or "")
    finally:
        r.close()


@pytest.mark.parametrize(("changes", "message"), [
    ({"block_size_mib": 4}, r"unknown key\(s\) in \[replicas\]: block_size_mib"),
    ({"container": "Replicas"}, "uppercase"),
])
def test_replica_options(changes: dict[str, Any], message: str, tmp_path: Path) -> None:
    options = {"account_url": "https://lsaexample.blob.core.windows.net", "container": "replicas",
               "credential": {"kind": "default"}, **changes}
    with pytest.raises(ConfigError, match=message):
        open_pageblob_replica(options, tmp_path, "srv-disk0")


def test_replica_name_is_checked(tmp_path: Path) -> None:
    with pytest.raises(ReplicaError, match="not valid"):
        open_pageblob_replica({}, tmp_path, "../escape")


def test_copy_fallback_with_a_size_not_a_multiple_of_512(azurite: Azurite, azure_container: str,
                                                          tmp_path: Path) -> None:
    """The page-by-page copy (used when the service refuses a server-side copy) pads the last page."""
    from godwit.replicas.pageblob import _copy_ranges

    size = MIB - 100
    data = os.urandom(1000)
    r = open_pageblob_replica(azurite.options(azure_container), tmp_path, "odd")
    r.begin(1, [(size - 1000, 1000)], size)
    r.write(size - 1000, data)
    r.seal(1)
    with r.open_point(1) as reader:
        assert isinstance(reader, type(r.open_point(1)))
        dest = r._service.get_blob_client(azure_container, "copy.vhd")
        _copy_ranges(reader, dest, r)  # type: ignore[arg-type]
    copied = dest.download_blob().readall()
    pad = vhd.rounded_size(size) - size
    assert copied[size - 1000:size] == data and copied[size:size + pad] == bytes(pad)
    r.close()


def test_expired_sas_url_says_so_without_the_secret(azurite: Azurite, azure_container: str) -> None:
    from azure.storage.blob import BlobSasPermissions, generate_blob_sas

    with azurite.service() as svc:
        svc.get_blob_client(azure_container, "md-old").create_page_blob(MIB + 512)
    now = datetime.now(UTC)
    sas = generate_blob_sas(azurite.account, azure_container, "md-old", account_key=azurite.key,
                            permission=BlobSasPermissions(read=True, write=True), start=now - timedelta(hours=2),
                            expiry=now - timedelta(hours=1))
    with pytest.raises(ReplicaError, match="expired at") as info:
        PageBlobReplica.from_sas_url(f"{azurite.blob_url}/{azure_container}/md-old?{sas}",
                                     ca_file=azurite.ca_file, retries=0)
    sig = dict(p.split("=", 1) for p in sas.split("&"))["sig"]
    assert sig not in str(info.value) and sig not in (info.value.hint or "")
    assert "grant-access" in (info.value.hint or "")
