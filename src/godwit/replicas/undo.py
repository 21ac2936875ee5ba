"""The local replica's undo journals: what cycle N overwrote, and reading older points through them.

Undo file layout (version 1): ``"GWUN" | u8 version=1 | 3 zero bytes | u64 cycle | u64 old size |
u32 count``, then ``count`` entries ``u64 offset | u64 length | u8 kind (0 data follows, 1 zeros)``
each followed by its data when kind is 0, then a 16-byte xxh3-128 of everything before.

Saving is cheap where it can be: ranges that are holes in the live file (``SEEK_HOLE``) become
zero entries without being read, data is read and written in 8 MiB pieces with the next 32 MiB
requested ahead (``POSIX_FADV_WILLNEED``), and one fsync ends it.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import xxhash

from godwit.errors import CorruptObjectError, ReplicaError
from godwit.replicas.base import PointReader
from godwit.replicas.files import data_runs, fsync_dir, merge, open_file

HEAD = struct.Struct("<4sB3xQQI")
ENTRY = struct.Struct("<QQB")
MAGIC = b"GWUN"
IO = 8 << 20
READ_AHEAD = 32 << 20
_ZEROS = bytes(IO)


def _entries(fd: int, ranges: list[tuple[int, int]]) -> list[tuple[int, int, bool]]:
    """The entries to save: holes whole, data in pieces of at most ``IO`` bytes."""
    out: list[tuple[int, int, bool]] = []
    for off, n in ranges:
        for o, k, is_data in data_runs(fd, off, n):
            if not is_data:
                out.append((o, k, False))
                continue
            out.extend((p, min(IO, o + k - p), True) for p in range(o, o + k, IO))
    return out


class _ReadAhead:
    """Ask the kernel to read the next ``READ_AHEAD`` bytes of old data while one piece is copied:
    the old data of a replica written with O_DIRECT is rarely in the page cache, and one pread at
    a time of scattered ranges kept the disk's queue at depth one."""

    def __init__(self, fd: int, entries: list[tuple[int, int, bool]]) -> None:
        self.fd = fd
        self.entries = entries
        self.next = 0  # first entry not yet advised
        self.advised = 0  # bytes advised beyond the entry being read

    def advance(self, i: int) -> None:
        if i < len(self.entries) and self.entries[i][2]:
            self.advised -= min(self.advised, self.entries[i][1])
        while self.next < len(self.entries) and self.advised < READ_AHEAD:
            o, k, is_data = self.entries[self.next]
            if is_data and self.next > i:
                os.posix_fadvise(self.fd, o, k, os.POSIX_FADV_WILLNEED)
                self.advised += k
            self.next += 1


def write_undo(fd: int, path: Path, number: int, old_size: int, ranges: list[tuple[int, int]],
               what: str) -> None:
    """Save the live file's bytes over ``ranges`` (clipped to ``old_size``) into ``path``,
    atomically: written to a temporary name, fsynced, renamed, the folder fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    h = xxhash.xxh3_128()
    try:
        entries = _entries(fd, merge(ranges, old_size))
        with open(tmp, "wb") as f:
            def put(b: bytes) -> None:
                f.write(b)
                h.update(b)

            put(HEAD.pack(MAGIC, 1, number, old_size, len(entries)))
            ahead = _ReadAhead(fd, entries)
            for i, (o, k, is_data) in enumerate(entries):
                ahead.advance(i)
                data = os.pread(fd, k, o) if is_data else b""
                if len(data) < k and is_data:
                    data += bytes(k - len(data))
                if not is_data or _ZEROS.startswith(data):  # memcmp against zeros
                    put(ENTRY.pack(o, k, 1))
                else:
                    put(ENTRY.pack(o, k, 0))
                    put(data)
            f.write(h.digest())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ReplicaError(f"cannot write the undo journal of {what}: {exc.strerror}",
                           hint="free space next to the replicas") from None


@dataclass(frozen=True)
class UndoEntry:
    offset: int
    length: int
    pos: int  # where its data starts in the undo file; -1 for zeros


class Undo:
    """A parsed, verified undo file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with os.fdopen(open_file(path), "rb") as f:
            h = xxhash.xxh3_128()
            left = size - 16
            while left > 0:  # streamed: an undo journal can be as large as the disk
                chunk = f.read(min(IO, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            if size < HEAD.size + 16 or left != 0 or f.read(16) != h.digest():
                raise CorruptObjectError(f"undo journal {path} is damaged",
                                         hint="older recovery points of this disk cannot be read")
            f.seek(0)
            magic, version, self.cycle, self.old_size, count = HEAD.unpack(f.read(HEAD.size))
            if magic != MAGIC or version != 1:
                raise CorruptObjectError(f"{path} is not an undo journal")
            self.entries: list[UndoEntry] = []
            pos = HEAD.size
            for _ in range(count):
                f.seek(pos)
                off, n, kind = ENTRY.unpack(f.read(ENTRY.size))
                pos += ENTRY.size
                if kind == 0:
                    self.entries.append(UndoEntry(off, n, pos))
                    pos += n
                else:
                    self.entries.append(UndoEntry(off, n, -1))


class Overlay:
    """Non-overlapping intervals, each mapped to where its bytes come from; first insert wins."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.items: list[tuple[int, int, Path | None, int]] = []  # start, end, undo file, pos

    def fill(self, start: int, end: int, src: Path | None, pos: int) -> None:
        i = bisect_right(self.starts, start) - 1
        cur = start
        new: list[tuple[int, int, Path | None, int]] = []
        j = max(i, 0)
        while cur < end:
            nxt = self.items[j] if j < len(self.items) else None
            if nxt is not None and nxt[1] <= cur:
                j += 1
                continue
            gap_end = end if nxt is None else min(end, nxt[0])
            if gap_end > cur:
                new.append((cur, gap_end, src, pos + (cur - start) if pos >= 0 else -1))
            if nxt is None:
                break
            cur = max(cur, nxt[1])
            j += 1
        for item in new:
            k = bisect_right(self.starts, item[0])
            self.starts.insert(k, item[0])
            self.items.insert(k, item)


class LocalPointReader(PointReader):
    def __init__(self, live: Path, size: int, undos: list[Undo]) -> None:
        self.size = size
        self._fd = open_file(live)
        self._overlay = Overlay()
        self._live = live
        for u in sorted(undos, key=lambda u: u.cycle):  # the earliest later cycle wins
            for e in u.entries:
                self._overlay.fill(e.offset, e.offset + e.length, u.path if e.pos >= 0 else None, e.pos)
        self._files: dict[Path, int] = {}

    def read(self, offset: int, length: int) -> bytes:
        if offset + length > self.size:
            raise ReplicaError(f"read past the end of the recovery point ({offset + length} > {self.size})")
        buf = bytearray(os.pread(self._fd, length, offset))
        if len(buf) < length:  # the live file may be shorter than an older, larger point
            buf.extend(bytes(length - len(buf)))
        ov = self._overlay
        i = max(bisect_right(ov.starts, offset) - 1, 0)
        end = offset + length
        while i < len(ov.items) and ov.items[i][0] < end:
            s, e, src, pos = ov.items[i]
            lo, hi = max(s, offset), min(e, end)
            if lo < hi:
                if src is None:
                    buf[lo - offset:hi - offset] = bytes(hi - lo)
                else:
                    fd = self._files.get(src)
                    if fd is None:
                        fd = self._files[src] = open_file(src)
                    buf[lo - offset:hi - offset] = os.pread(fd, hi - lo, pos + (lo - s))
            i += 1
        return bytes(buf)

    def allocated(self) -> list[tuple[int, int]] | None:
        from godwit.sources.file import FileSource

        src = FileSource(self._live)
        try:
            runs = [(e.offset, e.length) for e in src.extents(0, min(src.size, self.size)) if e.is_data]
        finally:
            src.close()
        runs += [(s, e - s) for s, e, p, _ in self._overlay.items if p is not None and s < self.size]
        return merge(runs, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()
