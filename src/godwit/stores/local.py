"""The local-folder store: the embedded default cache store.

Atomic put is write to a hidden temporary name, fsync, rename, fsync the folder: after a crash
an object is either whole or absent. Temporary names start with ``.tmp-`` and are never listed;
those a killed writer left behind are removed when the store opens, once older than
``TMP_MAX_AGE`` (a put writes at local-disk speed: throttling waits before it starts).

Objects are opened with ``O_NOFOLLOW | O_NONBLOCK`` and must be regular files: a FIFO would block
``open()`` forever and a link to ``/dev/zero`` would read until memory runs out (issue 8.5). No
read goes past the size ``fstat`` reports.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import mmap
import os
import secrets
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from godwit.errors import (
    CorruptObjectError,
    ObjectExistsError,
    ObjectMissingError,
    StoreError,
    StoreFullError,
    StoreReadOnlyError,
)
from godwit.stores.base import ObjectStore, validate_key

_TMP = ".tmp-"
TMP_MAX_AGE = 3600.0
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIRECT_ALIGN = 4096
DIRECT_MIN = 1 << 20


def _map_oserror(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StoreFullError(f"cache store is full while {what}",
                              hint="free space in the cache folder or move the project to a larger disk")
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return StoreReadOnlyError(f"cache store is not writable while {what}: {exc.strerror}",
                                  hint="check the cache folder's permissions and mount options")
    return StoreError(f"cache store failed while {what}: {exc.strerror or exc}")


def _page_aligned(view: memoryview) -> bool:
    if view.readonly or not view.contiguous:
        return False  # bytes objects: their address is not ours to align
    try:
        addr = ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return False
    return addr % mmap.PAGESIZE == 0


def _write_all(fd: int, view: memoryview) -> None:
    """Write everything; large page-aligned buffers go around the page cache (O_DIRECT).

    A pack is written once and read back only by the mover: copying it into the page cache cost
    more CPU than anything else in a cycle (bench/replicate.py). The unaligned tail, and any
    filesystem that refuses direct I/O (tmpfs), take the ordinary path.
    """
    o_direct = getattr(os, "O_DIRECT", 0)
    aligned = len(view) // DIRECT_ALIGN * DIRECT_ALIGN
    if o_direct and aligned >= DIRECT_MIN and _page_aligned(view):
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        try:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags | o_direct)
            head = view[:aligned]
            while head:
                head = head[os.write(fd, head):]
            view = view[aligned:]
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            os.lseek(fd, 0, os.SEEK_SET)  # refused: start over through the page cache
        finally:
            fcntl.fcntl(fd, fcntl.F_SETFL, flags)
    while view:
        view = view[os.write(fd, view):]


class LocalStore(ObjectStore):
    def __init__(self, root: Path, *, fsync: bool = True, collect_older_than: float | None = TMP_MAX_AGE) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.description = f"local folder {self.root}"
        if not self.root.is_dir():
            raise StoreError(f"cache folder {self.root} does not exist",
                             hint="run `godwit init` or fix `cache.path` in godwit.toml")
        if collect_older_than is not None:
            self.collect_temporaries(collect_older_than)

    def collect_temporaries(self, older_than: float) -> list[str]:
        """Remove ``.tmp-*`` files that no writer can still own (older than ``older_than`` s)."""
        removed: list[str] = []
        limit = time.time() - older_than
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if not name.startswith(_TMP):
                    continue
                path = os.path.join(dirpath, name)
                with contextlib.suppress(OSError):
                    if os.lstat(path).st_mtime < limit:
                        os.unlink(path)
                        removed.append(os.path.relpath(path, self.root))
        return removed

    def _open_object(self, key: str) -> tuple[int, int]:
        """The object's descriptor and size; a missing key, or anything but a regular file, refused."""
        path = self._path(key)
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except FileNotFoundError:
            raise ObjectMissingError(f"object {key} is missing from {self.description}") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise CorruptObjectError(f"object {key} in {self.description} is a symbolic link, not an object",
                                         hint="remove it; godwit never follows links in its cache") from None
            raise _map_oserror(exc, f"reading {key}") from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise CorruptObjectError(f"object {key} in {self.description} is not a regular file",
                                     hint="remove it; the cycle that needs it can be resent with "
                                          "`godwit replicate resync`")
        return fd, st.st_size

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        path = self._path(key)
        tmp = path.parent / f"{_TMP}{path.name}.{secrets.token_hex(4)}"
        what = f"writing {key}"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                _write_all(fd, memoryview(data))
                if self.fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if overwrite:
                os.rename(tmp, path)
            else:
                # link() fails if the name exists: the local equivalent of If-None-Match: *.
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    raise ObjectExistsError(f"object {key} already exists in {self.description}; "
                                            "refusing to overwrite it") from None
                finally:
                    os.unlink(tmp)
            if self.fsync:
                dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise _map_oserror(exc, what) from exc

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        fd, size = self._open_object(key)
        try:
            want = max(0, size - offset) if length is None else max(0, min(length, size - offset))
            parts: list[bytes] = []
            while want > 0:
                chunk = os.pread(fd, want, offset)
                if not chunk:
                    break  # shrank under us: what is there
                parts.append(chunk)
                offset += len(chunk)
                want -= len(chunk)
            return b"".join(parts)
        except OSError as exc:
            raise _map_oserror(exc, f"reading {key}") from exc
        finally:
            os.close(fd)

    def read_into(self, key: str, buf: mmap.mmap, offset: int = 0, length: int | None = None) -> memoryview | None:
        """Read the object's bytes from ``offset`` (at most ``length`` of them, never past the size
        ``fstat`` reports) into ``buf``, a page-aligned buffer such as an anonymous ``mmap``, and
        return the view of ``buf`` that holds them. Around the page cache (``O_DIRECT``) where the
        filesystem allows: the packs were written that way, so a buffered read finds them cold and
        copying them through the page cache cost more CPU than the rest of an apply
        (docs/benchmarks.md, "Mover"). A direct read is rounded out to whole pages, so up to one
        page either side of the range (never past the object's end) may land in ``buf``; ``buf``
        must hold that. Filesystems that refuse direct I/O (tmpfs) get an ordinary read of the
        range alone."""
        fd, size = self._open_object(key)
        try:
            want = max(0, size - offset) if length is None else max(0, min(length, size - offset))
            lo = offset // DIRECT_ALIGN * DIRECT_ALIGN
            hi = -(-(offset + want) // DIRECT_ALIGN) * DIRECT_ALIGN
            if hi - lo > len(buf):
                raise ValueError(f"a buffer of {len(buf)} bytes cannot hold {want} bytes at {offset} of {key}")
            view = memoryview(buf)
            o_direct = getattr(os, "O_DIRECT", 0)
            direct = bool(o_direct) and want >= DIRECT_MIN
            if direct:
                try:
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | o_direct)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    direct = False  # refused: the ordinary path
            pos, end = (lo, hi) if direct else (offset, offset + want)
            base = lo  # buf[0] holds file offset ``lo`` either way
            while pos < end:
                try:
                    n = os.preadv(fd, [view[pos - base:end - base]], pos)
                except OSError as exc:
                    if not direct or exc.errno != errno.EINVAL:
                        raise
                    n = -1  # refused at the read: go on through the page cache
                if n == 0:
                    break  # the end of the object (it may have shrunk under us: what is there)
                if n > 0:
                    pos += n
                if direct and (n < 0 or pos % DIRECT_ALIGN):
                    # Refused, or a short read that left an unaligned position: the rest buffered.
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~o_direct)
                    direct = False
                    end = offset + want
            got = max(0, min(pos, offset + want) - offset)
            return view[offset - base:offset - base + got]
        except OSError as exc:
            raise _map_oserror(exc, f"reading {key}") from exc
        finally:
            os.close(fd)

    def exists(self, key: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self._path(key)).st_mode)
        except OSError:
            return False

    def size(self, key: str) -> int:
        fd, size = self._open_object(key)
        os.close(fd)
        return size

    def list(self, prefix: str = "") -> Iterator[str]:
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(_TMP)]
            rel = os.path.relpath(dirpath, self.root)
            for name in filenames:
                if name.startswith(_TMP):
                    continue
                key = name if rel == "." else f"{rel}/{name}".replace(os.sep, "/")
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _map_oserror(exc, f"deleting {key}") from exc
