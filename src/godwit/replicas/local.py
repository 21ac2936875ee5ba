"""The sparse-local-file replica, with an undo journal for older recovery points.

Files, for a replica named ``disk0`` in folder ``D``::

    D/disk0.img                 the live disk: the latest applied cycle (sparse)
    D/disk0.undo/<N>.undo       what cycle N overwrote: recovery point N-1 over N's ranges
    D/disk0.points.json         sealed recovery points and whose they are (written atomically)

Why an undo journal: reflink copies need XFS or Btrfs, and a qcow2 overlay chain slows every
read. An undo log costs one read and one write of exactly the bytes a cycle changes, works on any
filesystem, and doubles as the crash-recovery record: it is complete and fsynced before the first
write of its cycle, so a partial apply can always be rolled back or simply redone (every write of a
cycle is absolute and immutable, so applying it again gives the same bytes).

Undo file layout: ``"GWUN" | u8 version=1 | 3 zero bytes | u64 cycle | u64 old size | u32 count``,
then ``count`` entries ``u64 offset | u64 length | u8 kind (0 data follows, 1 zeros)`` each followed
by its data when kind is 0, then a 16-byte xxh3-128 of everything before.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import stat
import struct
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import xxhash

from godwit.errors import CorruptObjectError, NotFoundError, ReplicaError
from godwit.replicas.base import PointReader, ReplicaDisk

_HEAD = struct.Struct("<4sB3xQQI")
_ENTRY = struct.Struct("<QQB")
_MAGIC = b"GWUN"
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_IO = 8 << 20

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]


def punch_hole(fd: int, offset: int, length: int) -> bool:
    """Deallocate a range (it then reads as zeros). False when the filesystem cannot."""
    if _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return False
    raise OSError(err, os.strerror(err))


_NOFOLLOW = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _open_file(path: Path, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
    """Open one of the replica's own files: never through a link, never a FIFO or a device (a
    planted one would redirect writes or block forever)."""
    try:
        fd = os.open(path, flags | _NOFOLLOW, mode)
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        raise ReplicaError(f"{path} is a symbolic link", hint="move it aside; godwit made no such link") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ReplicaError(f"{path} is not a regular file", hint="move it aside; godwit made no such file")
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _merge(ranges: list[tuple[int, int]], limit: int) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for off, n in sorted(ranges):
        end = min(off + n, limit)
        if end <= off:
            continue
        if out and off <= out[-1][0] + out[-1][1]:
            s = out[-1][0]
            out[-1] = (s, max(out[-1][0] + out[-1][1], end) - s)
        else:
            out.append((off, end - off))
    return out


@dataclass(frozen=True)
class _UndoEntry:
    offset: int
    length: int
    pos: int  # where its data starts in the undo file; -1 for zeros


class _Undo:
    """A parsed, verified undo file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        size = path.stat().st_size
        with os.fdopen(_open_file(path), "rb") as f:
            h = xxhash.xxh3_128()
            left = size - 16
            while left > 0:  # streamed: an undo journal can be as large as the disk
                chunk = f.read(min(_IO, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            if size < _HEAD.size + 16 or left != 0 or f.read(16) != h.digest():
                raise CorruptObjectError(f"undo journal {path} is damaged",
                                         hint="older recovery points of this disk cannot be read")
            f.seek(0)
            magic, version, self.cycle, self.old_size, count = _HEAD.unpack(f.read(_HEAD.size))
            if magic != _MAGIC or version != 1:
                raise CorruptObjectError(f"{path} is not an undo journal")
            self.entries: list[_UndoEntry] = []
            pos = _HEAD.size
            for _ in range(count):
                f.seek(pos)
                off, n, kind = _ENTRY.unpack(f.read(_ENTRY.size))
                pos += _ENTRY.size
                if kind == 0:
                    self.entries.append(_UndoEntry(off, n, pos))
                    pos += n
                else:
                    self.entries.append(_UndoEntry(off, n, -1))


class _Overlay:
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
    def __init__(self, live: Path, size: int, undos: list[_Undo]) -> None:
        self.size = size
        self._fd = _open_file(live)
        self._overlay = _Overlay()
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
                        fd = self._files[src] = _open_file(src)
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
        return _merge(runs, self.size)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        for fd in self._files.values():
            os.close(fd)
        self._files.clear()


class LocalReplica(ReplicaDisk):
    """``identity`` (the server's and disk's uids) is written into the points file and checked on
    every read of it: a replica never serves points recorded for another server or disk."""

    def __init__(self, folder: Path, name: str, *, identity: dict[str, str] | None = None) -> None:
        self.folder = Path(folder)
        self.name = name
        self.identity = dict(identity or {})
        self.live = self.folder / f"{name}.img"
        self.undo_dir = self.folder / f"{name}.undo"
        self.points_file = self.folder / f"{name}.points.json"
        self.description = str(self.live)
        self._fd = -1

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> dict[str, list[int]]:
        try:
            with os.fdopen(_open_file(self.points_file), "rb") as f:
                doc = json.loads(f.read())
            points = {"points": [int(n) for n in doc["points"]]}
            owner = {k: doc.get(k) for k in self.identity}
        except FileNotFoundError:
            return {"points": []}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CorruptObjectError(f"{self.points_file} is damaged") from None
        if owner != self.identity:
            raise ReplicaError(f"replica {self.live} belongs to another server or disk ({owner}, expected "
                               f"{self.identity})", hint="move the replica folder aside; godwit will not reuse it")
        return points

    def _save_state(self, points: list[int]) -> None:
        tmp = self.points_file.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"format": 1, **self.identity, "points": sorted(points)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.points_file)
        _fsync_dir(self.folder)

    def points(self) -> list[int]:
        return self._state()["points"]

    def _open(self) -> int:
        if self._fd < 0:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._fd = _open_file(self.live, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ReplicaError(f"cannot open replica {self.live}: {exc.strerror}") from None
        return self._fd

    @property
    def size(self) -> int:
        try:
            return self.live.stat().st_size
        except FileNotFoundError:
            return 0

    def _undo_path(self, number: int) -> Path:
        return self.undo_dir / f"{number:010d}.undo"

    # -- applying ----------------------------------------------------------------------------

    def begin(self, number: int, ranges: list[tuple[int, int]], size: int) -> None:
        fd = self._open()
        undo = self._undo_path(number)
        if number in self.points():
            return  # already sealed: re-applying it is harmless, and there is nothing to save
        if not undo.exists():
            old_size = os.fstat(fd).st_size
            self._write_undo(fd, undo, number, old_size, _merge(ranges, old_size))
        if size > os.fstat(fd).st_size:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                raise ReplicaError(f"cannot grow replica {self.live}: {exc.strerror}") from None

    def _write_undo(self, fd: int, path: Path, number: int, old_size: int, ranges: list[tuple[int, int]]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        h = xxhash.xxh3_128()
        try:
            with open(tmp, "wb") as f:
                def put(b: bytes) -> None:
                    f.write(b)
                    h.update(b)

                put(_HEAD.pack(_MAGIC, 1, number, old_size, sum(-(-n // _IO) for _, n in ranges)))
                for off, n in ranges:
                    for o in range(off, off + n, _IO):
                        k = min(_IO, off + n - o)
                        data = os.pread(fd, k, o)
                        data += bytes(k - len(data))
                        if data.count(0) == k:
                            put(_ENTRY.pack(o, k, 1))
                        else:
                            put(_ENTRY.pack(o, k, 0))
                            put(data)
                f.write(h.digest())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise ReplicaError(f"cannot write the undo journal of {self.live}: {exc.strerror}",
                               hint="free space next to the replicas") from None

    def write(self, offset: int, data: bytes | memoryview) -> None:
        fd = self._open()
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(fd, view, offset)
                view, offset = view[n:], offset + n
        except OSError as exc:
            raise ReplicaError(f"cannot write replica {self.live}: {exc.strerror}",
                               hint="free space where the replicas live") from None

    def zero(self, offset: int, length: int) -> None:
        fd = self._open()
        size = os.fstat(fd).st_size
        length = min(length, size - offset)
        if length <= 0:
            return
        if not punch_hole(fd, offset, length):
            for o in range(offset, offset + length, _IO):
                self.write(o, bytes(min(_IO, offset + length - o)))

    def seal(self, number: int) -> None:
        fd = self._open()
        try:
            os.fsync(fd)
            points = self.points()
            if number not in points:
                self._save_state([*points, number])
        except OSError as exc:
            raise ReplicaError(f"cannot seal recovery point {number} of {self.live}: {exc.strerror}",
                               hint="check the disk holding the replicas; the cycle is applied again next time"
                               ) from None

    def abort(self, number: int) -> None:
        """Roll back a partial apply of cycle ``number`` to the last sealed point."""
        if number in self.points():
            return
        path = self._undo_path(number)
        if not path.exists():
            return  # begin never finished: nothing of this cycle was written
        undo = _Undo(path)
        fd = self._open()
        with os.fdopen(_open_file(path), "rb") as f:
            for e in undo.entries:
                if e.pos < 0:
                    self.zero(e.offset, e.length)
                else:
                    f.seek(e.pos)
                    self.write(e.offset, f.read(e.length))
        os.ftruncate(fd, undo.old_size)
        os.fsync(fd)
        path.unlink()

    def release(self, number: int) -> None:
        points = self.points()
        if number not in points:
            return
        if number == max(points):
            raise ReplicaError(f"recovery point {number} is the live disk and cannot be released")
        # Point N is served by the undo of N+1 onwards; once N is gone, undo(N+1) serves nothing
        # only if no point before N+1 remains.
        remaining = [p for p in points if p != number]
        self._save_state(remaining)
        oldest = min(remaining)
        for f in self.undo_dir.glob("*.undo") if self.undo_dir.is_dir() else []:
            try:
                n = int(f.stem)
            except ValueError:
                continue
            if n <= oldest:
                f.unlink()

    def open_point(self, number: int) -> PointReader:
        points = self.points()
        if number not in points:
            raise NotFoundError(f"recovery point {number} does not exist on {self.live}"
                                + (f" (available: {', '.join(map(str, points))})" if points else ""))
        latest = max(points)
        undos: list[_Undo] = []
        # Every undo journal after the point, and the one of a cycle being applied (or interrupted)
        # after ``latest``. Cycles that were discarded or aborted have none, and need none.
        for n in range(number + 1, latest + 2):
            path = self._undo_path(n)
            if path.exists():
                undos.append(_Undo(path))
            elif n in points:
                raise CorruptObjectError(f"undo journal {path} is missing",
                                         hint=f"recovery points before {n} of this disk cannot be read")
        size = undos[0].old_size if undos else self.size
        return LocalPointReader(self.live, size, undos)

    def remove(self) -> None:
        self.close()
        self.live.unlink(missing_ok=True)
        self.points_file.unlink(missing_ok=True)
        if self.undo_dir.is_dir():
            for f in self.undo_dir.iterdir():
                f.unlink()
            self.undo_dir.rmdir()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
