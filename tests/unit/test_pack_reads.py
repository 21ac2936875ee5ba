"""The mover's pack reads: the local store's ``read_into`` (around the page cache, into an aligned
buffer) and the reader's reused buffers. Every byte handed out must be the object's, whatever the
filesystem or the kernel does (refusals, short reads), and never read past the object's end."""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine import reader as reader_mod
from godwit.engine.inventory import add_server
from godwit.engine.reader import iter_packs, iter_writes, load_manifest
from godwit.errors import CorruptObjectError
from godwit.format.hashing import extent_checksum
from godwit.project.project import Project, open_project
from godwit.stores import LocalStore
from godwit.stores import local as local_mod

MiB = 1 << 20
SIZE = 3 * MiB + 12345  # neither a page nor a MiB multiple
CASES = [(0, None), (0, SIZE), (0, SIZE + 99999), (8, MiB), (4096, 2 * MiB), (5000, 2 * MiB + 7),
         (SIZE - 10, 100), (SIZE, 5), (SIZE + 4096, 5), (MiB + 1, None)]


def _store(root: Path) -> tuple[LocalStore, bytes]:
    root.mkdir()
    store = LocalStore(root)
    data = os.urandom(SIZE)
    store.put("servers/x/packs/p.pack", data)
    return store, data


def _buf() -> mmap.mmap:
    return mmap.mmap(-1, SIZE + 3 * mmap.PAGESIZE)


@pytest.mark.parametrize("offset,length", CASES)
def test_read_into_gives_the_bytes_get_gives(tmp_path: Path, offset: int, length: int | None) -> None:
    store, data = _store(tmp_path / "cache")
    got = store.read_into("servers/x/packs/p.pack", _buf(), offset, length)
    assert got is not None
    end = len(data) if length is None else offset + length
    assert bytes(got) == data[offset:end] == store.get("servers/x/packs/p.pack", offset, length)


def test_read_into_goes_around_the_page_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store, data = _store(tmp_path / "cache")
    seen: list[tuple[bool, int, int]] = []
    real = os.preadv

    def spy(fd: int, bufs: list[memoryview], pos: int) -> int:
        seen.append((bool(fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT), pos, len(bufs[0])))
        return real(fd, bufs, pos)

    monkeypatch.setattr(local_mod.os, "preadv", spy)
    got = store.read_into("servers/x/packs/p.pack", _buf(), 5000, 2 * MiB)
    assert got is not None and bytes(got) == data[5000:5000 + 2 * MiB]
    if not seen[0][0]:
        pytest.skip("this filesystem refuses O_DIRECT")
    # Direct, from the page below the offset; never asked for more than the page after the range.
    assert seen[0][1] == 4096 and all(d for d, _, _ in seen)
    assert max(p + n for _, p, n in seen) <= -(-(5000 + 2 * MiB) // 4096) * 4096


@pytest.mark.parametrize("fault", ["short-unaligned", "einval-at-read", "einval-at-setfl"])
def test_read_into_survives_what_the_kernel_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   fault: str) -> None:
    store, data = _store(tmp_path / "cache")
    real_preadv, real_fcntl = os.preadv, fcntl.fcntl
    calls = {"n": 0}

    def preadv(fd: int, bufs: list[memoryview], pos: int) -> int:
        calls["n"] += 1
        if fault == "short-unaligned":  # a short read that leaves an unaligned position
            return real_preadv(fd, [bufs[0][:777 if calls["n"] == 1 else len(bufs[0])]], pos)
        if fault == "einval-at-read" and real_fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            raise OSError(errno.EINVAL, "refused")
        return real_preadv(fd, bufs, pos)

    def fcntl_(fd: int, cmd: int, arg: int = 0) -> int:
        if fault == "einval-at-setfl" and cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            raise OSError(errno.EINVAL, "refused")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(local_mod.os, "preadv", preadv)
    monkeypatch.setattr(local_mod.fcntl, "fcntl", fcntl_)
    for offset, length in [(0, None), (5000, 2 * MiB + 7)]:
        got = store.read_into("servers/x/packs/p.pack", _buf(), offset, length)
        end = len(data) if length is None else offset + length
        assert got is not None and bytes(got) == data[offset:end]


def test_read_into_refuses_a_buffer_too_small(tmp_path: Path) -> None:
    store, _ = _store(tmp_path / "cache")
    with pytest.raises(ValueError, match="cannot hold"):
        store.read_into("servers/x/packs/p.pack", mmap.mmap(-1, SIZE), 0, None)  # not rounded out


def test_read_into_on_tmpfs_reads_the_ordinary_way(tmp_path: Path) -> None:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm")
    root = shm / f"godwit-test-{os.getpid()}-{tmp_path.name}"
    try:
        store, data = _store(root)
        for offset, length in CASES:
            got = store.read_into("servers/x/packs/p.pack", _buf(), offset, length)
            end = len(data) if length is None else offset + length
            assert got is not None and bytes(got) == data[offset:end]
    finally:
        for f in sorted(root.rglob("*"), reverse=True):
            f.unlink() if f.is_file() else f.rmdir()
        root.rmdir()


def _cycle(project: Project, tmp_path: Path) -> tuple[Project, bytes]:
    cfg = project.root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("pack_size_mib = 32", "pack_size_mib = 2"))
    p = open_project(project.root)
    img = tmp_path / "d.raw"
    data = os.urandom(24 * MiB)
    img.write_bytes(data)
    add_server(p, "s", [str(img)])
    replication.start(p, "s")
    return p, data


def test_recycled_buffers_are_bounded_and_each_batch_is_right(project: Project, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    p, data = _cycle(project, tmp_path)
    m = load_manifest(p.store, p.db.server("s").uid, 1)
    assert len(m.packs()) >= 5  # more than the buffers
    made: list[int] = []
    real_mmap = mmap.mmap

    class Counting:
        PAGESIZE = mmap.PAGESIZE

        @staticmethod
        def mmap(fileno: int, length: int) -> mmap.mmap:
            made.append(length)
            return real_mmap(fileno, length)

    monkeypatch.setattr(reader_mod, "mmap", Counting)
    reads: list[str] = []
    real_read = LocalStore.read_into

    def spy(self: LocalStore, key: str, buf: mmap.mmap, offset: int = 0, length: int | None = None
            ) -> memoryview | None:
        reads.append(key)
        return real_read(self, key, buf, offset, length)

    monkeypatch.setattr(LocalStore, "read_into", spy)
    done = 0
    for batch in iter_packs(p.store, m, ahead=2, recycle=True):
        for w in batch:  # right when handed out (the buffer is reused only after the next is asked)
            assert w.data is not None and bytes(w.data) == data[w.offset:w.offset + w.length]
            done += w.length
    assert done == len(data)
    assert len(reads) == len(m.packs())  # every pack through read_into (the windowed store passes it on)
    assert 1 <= len(made) <= 3  # ahead + the caller's


def test_without_recycle_every_write_stays_valid(project: Project, tmp_path: Path) -> None:
    p, data = _cycle(project, tmp_path)
    m = load_manifest(p.store, p.db.server("s").uid, 1)
    writes = list(iter_writes(p.store, m))  # held across batches, as a replayer does
    assert sum(w.length for w in writes) == len(data)
    for w in writes:
        assert w.data is not None and extent_checksum(w.data) == extent_checksum(data[w.offset:w.offset + w.length])


def test_a_truncated_pack_read_directly_hands_out_nothing(project: Project, tmp_path: Path) -> None:
    p, data = _cycle(project, tmp_path)
    uid = p.db.server("s").uid
    m = load_manifest(p.store, uid, 1)
    last = m.packs()[-1]
    path = p.cache_dir / "servers" / uid / "packs" / f"{last}.pack"
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size // 2 + 1)  # an unaligned end, inside the extents
    handed: set[str] = set()
    with pytest.raises(CorruptObjectError, match="truncated"):
        for batch in iter_packs(p.store, m, recycle=True):
            for w in batch:
                assert w.data is not None and bytes(w.data) == data[w.offset:w.offset + w.length]
                handed.update(e.pack for e in m.disks[0].extents if e.offset == w.offset)
    assert last not in handed
