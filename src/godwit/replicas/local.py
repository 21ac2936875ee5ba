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

Writes are write-behind (``writer``: coalesced, aligned, O_DIRECT where allowed); ``zero``,
``begin``, ``seal`` and ``abort`` wait for them, and ``seal`` is the one fsync of a cycle. The undo
journal's format and the point reader are in ``undo``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from godwit.errors import CorruptObjectError, NotFoundError, ReplicaError
from godwit.replicas.base import PointReader, ReplicaDisk
from godwit.replicas.files import fsync_dir, open_file, punch_hole
from godwit.replicas.undo import IO, LocalPointReader, Undo, write_undo
from godwit.replicas.writer import AlignedWriter

__all__ = ["LocalReplica", "punch_hole"]


class LocalReplica(ReplicaDisk):
    """``identity`` (the server's and disk's uids) is written into the points file and checked on
    every read of it: a replica never serves points recorded for another server or disk."""

    def __init__(self, folder: Path, name: str, *, identity: dict[str, str] | None = None,
                 direct: bool = True) -> None:
        self.folder = Path(folder)
        self.name = name
        self.identity = dict(identity or {})
        self.live = self.folder / f"{name}.img"
        self.undo_dir = self.folder / f"{name}.undo"
        self.points_file = self.folder / f"{name}.points.json"
        self.description = str(self.live)
        self.direct = direct
        self._fd = -1
        self._writer: AlignedWriter | None = None

    # -- state -------------------------------------------------------------------------------

    def _state(self) -> dict[str, list[int]]:
        try:
            with os.fdopen(open_file(self.points_file), "rb") as f:
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
        fsync_dir(self.folder)

    def points(self) -> list[int]:
        return self._state()["points"]

    def _open(self) -> int:
        if self._fd < 0:
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._fd = open_file(self.live, os.O_RDWR | os.O_CREAT)
            except OSError as exc:
                raise ReplicaError(f"cannot open replica {self.live}: {exc.strerror}") from None
            self._writer = AlignedWriter(self.live, self._fd, direct=self.direct)
        return self._fd

    def _flush(self) -> None:
        """Every write made so far is in the file (durable only after the seal's fsync)."""
        if self._writer is not None:
            try:
                self._writer.flush()
            except OSError as exc:
                self._writer.reset()
                raise ReplicaError(f"cannot write replica {self.live}: {exc.strerror}",
                                   hint="free space where the replicas live") from None

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
        self._flush()
        undo = self._undo_path(number)
        if number in self.points():
            return  # already sealed: re-applying it is harmless, and there is nothing to save
        if not undo.exists():
            old_size = os.fstat(fd).st_size
            write_undo(fd, undo, number, old_size, ranges, str(self.live))
        if size > os.fstat(fd).st_size:
            try:
                os.ftruncate(fd, size)
            except OSError as exc:
                raise ReplicaError(f"cannot grow replica {self.live}: {exc.strerror}") from None

    def write(self, offset: int, data: bytes | memoryview) -> None:
        self._open()
        assert self._writer is not None
        try:
            self._writer.write(offset, data)
        except OSError as exc:
            self._writer.reset()
            raise ReplicaError(f"cannot write replica {self.live}: {exc.strerror}",
                               hint="free space where the replicas live") from None

    def zero(self, offset: int, length: int) -> None:
        fd = self._open()
        self._flush()  # a queued write of these bytes must not land after the hole
        size = os.fstat(fd).st_size
        length = min(length, size - offset)
        if length <= 0:
            return
        if not punch_hole(fd, offset, length):
            for o in range(offset, offset + length, IO):
                self.write(o, bytes(min(IO, offset + length - o)))

    def seal(self, number: int) -> None:
        fd = self._open()
        self._flush()
        try:
            os.fsync(fd)  # the cycle's one fsync of the live file
            points = self.points()
            if number not in points:
                self._save_state([*points, number])
        except OSError as exc:
            raise ReplicaError(f"cannot seal recovery point {number} of {self.live}: {exc.strerror}",
                               hint="check the disk holding the replicas; the cycle is applied again next time"
                               ) from None

    def abort(self, number: int) -> None:
        """Roll back a partial apply of cycle ``number`` to the last sealed point."""
        fd = self._open()
        assert self._writer is not None
        self._writer.reset()  # what was queued lands first, then the rollback overwrites it
        if number in self.points():
            return
        path = self._undo_path(number)
        if not path.exists():
            return  # begin never finished: nothing of this cycle was written
        undo = Undo(path)
        with os.fdopen(open_file(path), "rb") as f:
            for e in undo.entries:
                if e.pos < 0:
                    self.zero(e.offset, e.length)
                else:
                    f.seek(e.pos)
                    self.write(e.offset, f.read(e.length))
        self._flush()
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
        undos: list[Undo] = []
        # Every undo journal after the point, and the one of a cycle being applied (or interrupted)
        # after ``latest``. Cycles that were discarded or aborted have none, and need none.
        for n in range(number + 1, latest + 2):
            path = self._undo_path(n)
            if path.exists():
                undos.append(Undo(path))
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
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
