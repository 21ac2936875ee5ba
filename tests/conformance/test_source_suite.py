"""One suite, every DiskSource: the contract in godwit/sources/base.py, checked with real qemu.

The same sparse raw image is read directly (FileSource) and, converted by ``qemu-img convert``,
as qcow2, VMDK, fixed and dynamic VHD, and VHDX through qemu-nbd (NbdSource). Every reader must
return the raw bytes. Two more open with a point-in-time view, as a cycle does: a qcow2 internal
snapshot, and a raw file's reflink clone on an XFS that the suite makes on a loop device.
"""

from __future__ import annotations

import mmap
import os
import random
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from godwit.errors import SourceError
from godwit.sources import open_source
from godwit.sources.base import DiskSource, Extent
from godwit.sources.file import FileSource
from godwit.sources.nbd import NbdSource
from tests.reflinkfs import reflink_filesystem

MiB = 1 << 20
# Not a multiple of any cluster or request size, so last partial clusters and requests are covered.
SIZE = 12 * MiB + 3 * 512


def _make_raw(path: Path) -> bytes:
    """A sparse raw image: data, holes, explicitly written zeros, data in the last sector."""
    rng = random.Random(20261125)
    image = bytearray(SIZE)
    pieces = [(0, 300_000), (5 * MiB + 4096, 2 * MiB + 777), (SIZE - 1000, 1000)]
    pieces += [(rng.randrange(0, SIZE - 70_000), rng.randrange(1, 70_000)) for _ in range(12)]
    for off, n in pieces:
        image[off:off + n] = rng.randbytes(n)
    with open(path, "wb") as f:
        f.truncate(SIZE)
        for off, n in pieces:
            f.seek(off)
            f.write(image[off:off + n])
        f.seek(9 * MiB)  # allocated zeros: readers may call them data or not, but they read as zeros
        f.write(bytes(MiB))
        image[9 * MiB:10 * MiB] = bytes(MiB)
    return bytes(image)


@dataclass(frozen=True)
class Kind:
    name: str
    fmt: str  # "raw", or the qemu format name
    convert_opts: tuple[str, ...] = ()
    finds_holes: bool = True
    snapshot: bool = False  # opened with a point-in-time view, as a cycle opens it


KINDS = [
    Kind("raw-file", "raw"),
    Kind("qcow2", "qcow2"),
    Kind("vmdk", "vmdk"),
    # force_size keeps the exact size; without it qemu rounds a VHD up to its CHS geometry.
    Kind("vpc-fixed", "vpc", ("-o", "subformat=fixed,force_size=on"), finds_holes=False),  # all data
    Kind("vpc-dynamic", "vpc", ("-o", "subformat=dynamic,force_size=on")),
    # qemu 7.2's vhdx driver has no block-status: every block is reported as data.
    Kind("vhdx", "vhdx", finds_holes=False),
    Kind("qcow2-snapshot", "qcow2", snapshot=True),  # an internal snapshot, exported by qemu-nbd
    Kind("raw-reflink", "raw", snapshot=True),  # a FICLONE clone, on the suite's own XFS
]


@dataclass(frozen=True)
class Image:
    kind: Kind
    path: Path
    data: bytes

    @property
    def snapdir(self) -> Path:
        return self.path.parent / f"snapshots-{self.kind.name}"

    def open(self) -> DiskSource:
        if self.kind.snapshot:
            return open_source(self.path, self.kind.fmt, snapshot_dir=self.snapdir, temp_tag=f"suite-{self.kind.name}")
        if self.kind.fmt == "raw":
            return FileSource(self.path)
        return NbdSource.for_image(self.path, self.kind.fmt, snapshot=False)

    def leftovers(self) -> list[str]:
        """Temporaries of a closed snapshot open still on disk (there must be none)."""
        left = [p.name for p in self.snapdir.iterdir()] if self.snapdir.exists() else []
        if self.kind.fmt == "qcow2":
            listing = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(self.path)], check=True,
                                     capture_output=True, text=True).stdout
            left += [line for line in listing.splitlines() if "godwit-" in line]
        return left


@pytest.fixture(scope="module")
def raw_image(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    path = tmp_path_factory.mktemp("suite") / "disk.raw"
    return path, _make_raw(path)


@pytest.fixture(scope="module")
def xfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with reflink_filesystem(tmp_path_factory.mktemp("suite-xfs")) as mnt:
        yield mnt


@pytest.fixture(scope="module", params=KINDS, ids=[k.name for k in KINDS])
def image(request: pytest.FixtureRequest, raw_image: tuple[Path, bytes]) -> Image:
    return _image(request, request.param, raw_image)


SNAPSHOT_KINDS = [k for k in KINDS if k.snapshot]


@pytest.fixture(scope="module", params=SNAPSHOT_KINDS, ids=[k.name for k in SNAPSHOT_KINDS])
def snapshot_image(request: pytest.FixtureRequest, raw_image: tuple[Path, bytes]) -> Image:
    return _image(request, request.param, raw_image)


def _image(request: pytest.FixtureRequest, kind: Kind, raw_image: tuple[Path, bytes]) -> Image:
    raw, data = raw_image
    if kind.name == "raw-reflink":
        path = request.getfixturevalue("xfs") / "disk.raw"
        if not path.exists():
            shutil.copyfile(raw, path)  # not sparse-preserving; the holes test tolerates allocated zeros
            subprocess.run(["fallocate", "--dig-holes", str(path)], check=True)
        return Image(kind, path, data)
    if kind.fmt == "raw":
        return Image(kind, raw, data)
    path = raw.with_name(f"disk.{kind.name}")
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", kind.fmt, *kind.convert_opts, str(raw), str(path)],
                   check=True, capture_output=True)
    return Image(kind, path, data)


@pytest.fixture
def source(image: Image) -> Iterator[DiskSource]:
    src = image.open()
    try:
        yield src
    finally:
        src.close()


def _read(src: DiskSource, offset: int, length: int, alloc: Callable[[int], memoryview]) -> bytes:
    buf = alloc(length)
    src.read_into(offset, buf)
    return bytes(buf)


def _bytearray(n: int) -> memoryview:
    return memoryview(bytearray(n))


def _mmap(n: int) -> memoryview:
    return memoryview(mmap.mmap(-1, max(n, 1)))[:n]  # page-aligned, as the cycle engine uses


def _ranges(seed: int, count: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    out = [(0, SIZE), (0, 1), (SIZE - 1, 1), (SIZE - 4097, 4097), (4 * MiB - 1, 4 * MiB + 2), (0, 0)]
    for _ in range(count):
        n = rng.choice([1, 511, 512, 4096, 65_536, 1_000_000, rng.randrange(1, 5 * MiB)])
        out.append((rng.randrange(0, SIZE - n + 1), n))
    return out


def test_size_is_the_raw_size(source: DiskSource, image: Image) -> None:
    assert source.size == len(image.data)


def test_consistency_and_warnings(source: DiskSource, image: Image) -> None:
    # No one writes the suite's images: a snapshot open sees one instant, a live open reads the
    # live image, and neither has anything to warn about.
    assert source.consistency == ("crash" if image.kind.snapshot else "none")
    assert source.warnings == []
    assert source.description == str(image.path)


def test_snapshot_open_reads_one_instant(snapshot_image: Image, tmp_path: Path) -> None:
    """A write to the image after a snapshot open is not seen (a fresh live open sees it)."""
    image = snapshot_image
    copy = replace(image, path=(image.path.parent if image.kind.name == "raw-reflink" else tmp_path) / "instant.img")
    shutil.copyfile(image.path, copy.path)
    changed = bytearray(image.data)
    changed[MiB:2 * MiB] = b"\xee" * MiB
    try:
        with copy.open() as src:
            if image.kind.fmt == "qcow2":
                subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -q -P 0xee {MiB} {MiB}", str(copy.path)],
                               check=True, capture_output=True)
            else:
                fd = os.open(copy.path, os.O_WRONLY)
                os.pwrite(fd, b"\xee" * MiB, MiB)
                os.close(fd)
            assert _read(src, 0, SIZE, _bytearray) == image.data
        assert copy.leftovers() == []
        live = replace(copy, kind=replace(image.kind, snapshot=False)).open()
        with live:
            assert _read(live, 0, SIZE, _bytearray) == changed  # the write did land
    finally:
        copy.path.unlink(missing_ok=True)


@pytest.mark.parametrize("alloc", [_bytearray, _mmap], ids=["bytearray", "mmap"])
def test_random_reads_equal_raw(source: DiskSource, image: Image, alloc: Callable[[int], memoryview]) -> None:
    for off, n in _ranges(seed=1, count=60):
        assert _read(source, off, n, alloc) == image.data[off:off + n], (off, n)


def test_read_many_equals_raw(source: DiskSource, image: Image) -> None:
    """Many pieces in one call (a bitmap cycle's scattered clusters, in flight together over NBD):
    aligned 64 KiB ones, odd and unaligned ones, the last partial sector, one longer than a request,
    all into one page-aligned buffer, each piece at its own place."""
    rng = random.Random(7)
    pieces = [(rng.randrange(SIZE // 65_536) * 65_536, 65_536) for _ in range(40)]
    pieces += [(SIZE - 1000, 1000), (0, 1), (3 * 512, 512), (1, 70_000), (0, 5 * MiB), (SIZE - 2, 2)]
    buf = _mmap(sum(n for _, n in pieces))
    views, pos = [], 0
    for off, n in pieces:
        views.append((off, buf[pos:pos + n]))
        pos += n
    source.read_many(views)
    for (off, n), (_, mv) in zip(pieces, views, strict=True):
        assert bytes(mv) == image.data[off:off + n], (off, n)
    with pytest.raises(SourceError):
        source.read_many([(0, memoryview(bytearray(10))), (SIZE - 10, memoryview(bytearray(20)))])


def _check_cover(extents: list[Extent], offset: int, length: int) -> None:
    pos = offset
    for e in extents:
        assert e.offset == pos, f"gap or overlap at {pos}: {e}"
        assert e.length > 0, e
        pos += e.length
    assert pos == offset + length


def test_extents_cover_range_and_holes_read_as_zeros(source: DiskSource, image: Image) -> None:
    for off, n in _ranges(seed=2, count=30):
        extents = list(source.extents(off, n))
        _check_cover(extents, off, n)
        for e in extents:
            if not e.is_data:
                assert image.data[e.offset:e.offset + e.length].count(0) == e.length, e
                assert _read(source, e.offset, e.length, _bytearray).count(0) == e.length, e
    whole = list(source.extents(0, SIZE))
    if image.kind.finds_holes:
        assert any(not e.is_data for e in whole), "holes of a sparse image should be reported"
    # every byte that is not zero must lie in a data extent
    for e in whole:
        if not e.is_data:
            assert not any(image.data[e.offset:e.offset + e.length])


def test_read_past_end_raises(source: DiskSource) -> None:
    with pytest.raises(SourceError):
        source.read_into(SIZE - 10, memoryview(bytearray(20)))
    with pytest.raises(SourceError):
        source.read_into(SIZE, memoryview(bytearray(1)))


def test_close_is_idempotent(image: Image) -> None:
    src = image.open()
    assert _read(src, 0, 4096, _bytearray) == image.data[:4096]
    src.close()
    src.close()
    with src:  # the context manager closes once more
        pass
    assert image.leftovers() == []  # snapshot, clone, nothing left behind


def test_concurrent_reads_from_two_threads(source: DiskSource, image: Image) -> None:
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            for off, n in _ranges(seed=seed, count=40):
                got = _read(source, off, n, _mmap)
                assert got == image.data[off:off + n], (seed, off, n)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in (10, 11)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
