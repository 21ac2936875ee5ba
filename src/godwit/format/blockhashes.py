"""Block-hash files: the per-disk digests of every block as of a committed cycle.

They live in the appliance's state folder, not the cache store: the scan tracker compares a new
read with them, and ``verify`` compares a replica with them. docs/format.md, "Block-hash files",
has both layouts. Version 1 is dense (one digest per block, so a 2 TiB disk costs 512 MiB whatever
it holds); version 2, written since godwit 0.2, keeps only runs of blocks that are not holes::

    "GWBH" | u8 version | u8 algorithm (1 xxh3-128, 2 blake3-128) | 2 zero bytes |
    u32 block size | u64 disk size | body | 16-byte xxh3-128 of all before
    v1 body: count × 16-byte digests
    v2 body: runs, each u64 first block | u32 n | n × 16-byte digests; blocks in no run are holes

Both are read in windows (``Reader.window``) and written window by window (``Writer``): a
cycle never holds a disk's digests whole. ``read`` and ``write`` are for tests and tools.
"""

from __future__ import annotations

import os
import struct
import weakref
from collections.abc import Iterator
from pathlib import Path

import xxhash

from godwit.errors import CorruptObjectError
from godwit.format.hashing import ALGORITHM_CODES, block_digest

MAGIC = b"GWBH"
HEAD = struct.Struct("<4sBBxxIQ")
RUN = struct.Struct("<QI")  # v2: first block, digests in the run
DIGEST = 16
VERSION = 2
MAX_RUN = 1 << 16  # digests a writer holds before it ends a run (1 MiB)
_IO = 1 << 20  # bytes read at once
_WRITE_BUF = 256 << 10
_SCAN = 4096  # digests compared at once when looking for the end of a hole


def block_count(size: int, block_size: int) -> int:
    return (size + block_size - 1) // block_size


def zero_digests(algorithm: str, block_size: int, size: int) -> tuple[bytes, bytes]:
    """The digest of a zero block, and of the disk's last block when it is all zero."""
    digest = block_digest(algorithm)
    full = digest(bytes(block_size))
    tail = size % block_size
    return full, (digest(bytes(tail)) if tail else full)


def nonzero_runs(d: bytes | bytearray, zero: bytes, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Runs [a, b) of digest indexes in [start, end) of ``d`` whose digest is not ``zero``.

    Cost grows with the number of runs, not of digests: holes and data are skipped by C-level
    ``find`` and slice compares.
    """
    pos = start
    zrep = zero * min(_SCAN, max(end - start, 1))
    while pos < end:
        i = d.find(zero, pos * DIGEST, end * DIGEST)
        while i >= 0 and i % DIGEST:  # a match across two digests: not a zero block
            i = d.find(zero, i + 1, end * DIGEST)
        z = end if i < 0 else i // DIGEST
        if z > pos:
            yield pos, z
        if z >= end:
            return
        pos = _zero_end(d, zrep, z, end)


def _zero_end(d: bytes | bytearray, zrep: bytes, pos: int, end: int) -> int:
    """The first index at or after ``pos`` whose digest is not zero, or ``end``."""
    step = len(zrep) // DIGEST
    while pos + step <= end and d[pos * DIGEST:(pos + step) * DIGEST] == zrep:
        pos += step
    lo, hi = pos, min(pos + step, end)  # [.., lo) are zero; the answer lies in [lo, hi]
    while lo < hi:
        mid = (lo + hi) // 2
        if d[lo * DIGEST:(mid + 1) * DIGEST] == zrep[:(mid + 1 - lo) * DIGEST]:
            lo = mid + 1
        else:
            hi = mid
    return lo


class Writer:
    """Writes a version 2 file as ``<name>.tmp`` beside ``path``, window by window in block order.

    ``add`` takes consecutive windows from block 0; ``finish`` writes the trailer and fsyncs;
    ``publish`` renames the file into place. Holes (zero-block digests) are not stored.
    """

    def __init__(self, path: Path, algorithm: str, block_size: int, size: int) -> None:
        self.path = path
        self.tmp = path.with_suffix(".tmp")
        self.block_size = block_size
        self.size = size
        self.count = block_count(size, block_size)
        self.zero, self.tail_zero = zero_digests(algorithm, block_size, size)
        self.next = 0
        self._run_first = 0
        self._run = bytearray()
        self._hash = xxhash.xxh3_128()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.tmp, "wb", buffering=_WRITE_BUF)  # noqa: SIM115 (closed by finish, abort or the finalizer)
        self._closer = weakref.finalize(self, self._f.close)
        self._emit(HEAD.pack(MAGIC, VERSION, ALGORITHM_CODES[algorithm], block_size, size))
        self.stored = 0  # digests written (the rest are holes)

    def _emit(self, b: bytes | bytearray | memoryview) -> None:
        self._hash.update(b)
        self._f.write(b)

    def _end_run(self) -> None:
        if self._run:
            n = len(self._run) // DIGEST
            self._emit(RUN.pack(self._run_first, n))
            self._emit(self._run)
            self.stored += n
            self._run = bytearray()

    def _keep(self, first: int, d: bytes | bytearray, a: int, b: int) -> None:
        """Store digests a..b of window ``d`` (which starts at block ``first``)."""
        while a < b:
            if self._run and self._run_first + len(self._run) // DIGEST != first + a:
                self._end_run()
            if not self._run:
                self._run_first = first + a
            n = min(b - a, MAX_RUN - len(self._run) // DIGEST)
            self._run += d[a * DIGEST:(a + n) * DIGEST]
            a += n
            if len(self._run) // DIGEST >= MAX_RUN:
                self._end_run()

    def add(self, first: int, digests: bytes | bytearray) -> None:
        """The digests of blocks ``first`` .. ``first + len(digests) / 16``; ``first`` follows the last."""
        n = len(digests) // DIGEST
        if first != self.next or len(digests) % DIGEST or first + n > self.count:
            raise ValueError(f"block-hash window {first}+{n} does not follow block {self.next} of {self.count}")
        if not n:
            return
        plain = n - 1 if first + n == self.count and self.tail_zero != self.zero else n
        for a, b in nonzero_runs(digests, self.zero, 0, plain):
            self._keep(first, digests, a, b)
        if plain < n and digests[plain * DIGEST:] != self.tail_zero:
            self._keep(first, digests, plain, n)
        self.next = first + n

    def finish(self) -> None:
        """Trailer, flush, fsync. Every block must have been added."""
        if self.next != self.count:
            raise ValueError(f"block-hash file {self.tmp} has {self.next} of {self.count} blocks")
        self._end_run()
        self._f.write(self._hash.digest())
        self._f.flush()
        os.fsync(self._f.fileno())
        self._closer()

    def publish(self) -> None:
        """Rename the finished file into place (and make the rename durable)."""
        os.replace(self.tmp, self.path)
        fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def abort(self) -> None:
        self._closer()
        self.tmp.unlink(missing_ok=True)


class Reader:
    """A verified block-hash file of either version, read in windows.

    ``open_reader`` checks the whole file (trailer and, for version 2, every run's place) in one
    streaming pass before any digest is handed out. Version 2 windows must go forward: each
    ``window`` starts at or after the end of the one before (the pipeline's order).
    """

    def __init__(self, path: Path, fd: int, version: int, algorithm: str, block_size: int, size: int,
                 body_end: int) -> None:
        self.path = path
        self.version = version
        self.block_size = block_size
        self.size = size
        self.count = block_count(size, block_size)
        self.zero, self.tail_zero = zero_digests(algorithm, block_size, size)
        self._fd = fd
        self._closer = weakref.finalize(self, os.close, fd)
        self._body_end = body_end
        self._last = 0
        self._buf = b""
        self._buf_at = 0
        self._next_run = HEAD.size  # file offset of the next run header (v2)
        self._cur: tuple[int, int, int] | None = None  # (first block, end block, offset of its digests)
        self._started = False  # the first run header is read by the first window (no I/O here)

    def close(self) -> None:
        self._closer()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pread(self, off: int, n: int) -> bytes:
        if not (self._buf_at <= off and off + n <= self._buf_at + len(self._buf)):
            self._buf = os.pread(self._fd, max(n, _IO), off)
            self._buf_at = off
            if len(self._buf) < n:
                raise CorruptObjectError(f"block-hash file {self.path} changed while it was read")
        return self._buf[off - self._buf_at:off - self._buf_at + n]

    def _advance(self) -> None:
        if self.version == 1 or self._next_run >= self._body_end:
            self._cur = None
            return
        first, n = RUN.unpack(self._pread(self._next_run, RUN.size))
        self._cur = (first, first + n, self._next_run + RUN.size)
        self._next_run += RUN.size + n * DIGEST

    def _holes(self, a: int, b: int) -> bytes:
        if b == self.count and b > a and self.tail_zero != self.zero:
            return self.zero * (b - a - 1) + self.tail_zero
        return self.zero * (b - a)

    def window(self, first: int, end: int) -> bytes:
        """The digests of blocks [first, end)."""
        if not 0 <= first <= end <= self.count:
            raise ValueError(f"window {first}..{end} outside the {self.count} blocks of {self.path}")
        if self.version == 1:
            return self._pread(HEAD.size + first * DIGEST, (end - first) * DIGEST)
        if first < self._last:
            raise ValueError(f"window at block {first} goes back (the last ended at {self._last})")
        self._last = end
        if not self._started:
            self._started = True
            self._advance()
        parts: list[bytes] = []
        pos = first
        while pos < end:
            while self._cur is not None and self._cur[1] <= pos:
                self._advance()
            if self._cur is None or self._cur[0] >= end:
                parts.append(self._holes(pos, end))
                break
            rf, re_, off = self._cur
            if rf > pos:
                parts.append(self._holes(pos, rf))
                pos = rf
            stop = min(end, re_)
            parts.append(self._pread(off + (pos - rf) * DIGEST, (stop - pos) * DIGEST))
            pos = stop
        return b"".join(parts)


def open_reader(path: Path, algorithm: str, block_size: int) -> Reader:
    """Open and verify a block-hash file. Raises CorruptObjectError if damaged or of other settings
    (and FileNotFoundError if there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        version, algo, bs, size, body_end = _verify(path, fd)
        if algo != ALGORITHM_CODES[algorithm] or bs != block_size:
            raise CorruptObjectError(f"block-hash file {path} was made with other settings "
                                     "(hash or block size changed)", hint="run a full resync")
        return Reader(path, fd, version, algorithm, bs, size, body_end)
    except BaseException:
        os.close(fd)
        raise


def _verify(path: Path, fd: int) -> tuple[int, int, int, int, int]:
    """One pass over the file: its checksum, and (v2) that its runs are in order inside the disk."""
    total = os.fstat(fd).st_size
    if total < HEAD.size + DIGEST:
        raise CorruptObjectError(f"block-hash file {path} is truncated")
    head = os.pread(fd, HEAD.size, 0)
    magic, version, algo, bs, size = HEAD.unpack(head)
    if magic != MAGIC or version not in (1, 2):
        raise CorruptObjectError(f"{path} is not a block-hash file of a version this godwit reads",
                                 hint="a newer godwit wrote it; upgrade")
    body_end = total - DIGEST
    h = xxhash.xxh3_128(head)
    pos = HEAD.size
    next_run, expect = HEAD.size, 0  # v2: where the next run header starts; first block it may name
    count = block_count(size, bs) if bs else 0
    bad = ""
    while pos < body_end:
        chunk = os.pread(fd, min(_IO, body_end - pos), pos)
        if not chunk:
            raise CorruptObjectError(f"block-hash file {path} is truncated")
        h.update(chunk)
        while version == 2 and not bad and next_run < pos + len(chunk):  # headers within this chunk
            if next_run + RUN.size > body_end:
                bad = "a run header past its end"
                break
            if next_run + RUN.size > pos + len(chunk):  # straddles into the next chunk
                raw = os.pread(fd, RUN.size, next_run)
            else:
                raw = chunk[next_run - pos:next_run - pos + RUN.size]
            first, n = RUN.unpack(raw)
            if n < 1 or first < expect or first + n > count:
                bad = f"a run at block {first} of {n} digests out of order or past the disk"
                break
            expect = first + n
            next_run += RUN.size + n * DIGEST
        pos += len(chunk)
    if h.digest() != os.pread(fd, DIGEST, body_end):
        raise CorruptObjectError(f"block-hash file {path} failed its checksum")
    if not bs or bs & (bs - 1):
        bad = f"block size {bs}"
    elif version == 1 and body_end - HEAD.size != count * DIGEST:
        bad = "the wrong number of digests"
    elif version == 2 and next_run != body_end:
        bad = "runs that do not end where its trailer starts"
    if bad:
        raise CorruptObjectError(f"block-hash file {path} has {bad}")
    return version, algo, bs, size, body_end


def write(path: Path, algorithm: str, block_size: int, size: int, digests: bytes | bytearray) -> None:
    """Write a whole digest array as a version 2 file (tests and tools; the engine streams)."""
    if len(digests) != block_count(size, block_size) * DIGEST:
        raise ValueError("digest array does not match the disk size")
    w = Writer(path, algorithm, block_size, size)
    try:
        for a in range(0, w.count, MAX_RUN):
            w.add(a, digests[a * DIGEST:min(a + MAX_RUN, w.count) * DIGEST])
        w.finish()
    except BaseException:
        w.abort()
        raise
    w.publish()


def read(path: Path, algorithm: str, block_size: int) -> tuple[int, bytearray]:
    """(disk size, every digest) of a file of either version, whole (tests and tools only)."""
    with open_reader(path, algorithm, block_size) as r:
        return r.size, bytearray(r.window(0, r.count))
