"""Writing one recovery point of one disk as raw, fixed VHD or qcow2.

Output is written in a fresh private folder (``mkdtemp``: mode 0700, a name nobody could plant a
link for) inside the output folder, and linked to its final name only when whole and synced; the
link fails if that name exists, so nothing already there (a file, or a link planted by another
user of a shared folder such as /tmp) is ever followed or overwritten (issue 8.4). A file with the
final name is always complete. Zero runs are skipped (the output is sparse).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from godwit.errors import MigrationError, UsageError
from godwit.replicas.base import PointReader

FORMATS = {"raw": "raw", "vhd": "vhd", "qcow2": "qcow2", "pageblob": "pageblob"}
_IO = 8 << 20


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r} is unknown",
                         hint="use raw, vhd (fixed, for Azure), qcow2, or pageblob (a copy in the replicas' account)")
    return fmt


def needed_bytes(reader: PointReader, fmt: str) -> int:
    alloc = reader.allocated()
    used = sum(n for _, n in alloc) if alloc is not None else reader.size
    return used * 2 if fmt == "qcow2" else used + 512  # qcow2 goes through a raw file first


def refuse_out_dir(out_dir: Path, sources: Sequence[str | Path] = (), reserved: Sequence[Path] = ()) -> None:
    """Refuse an output folder that is ``/``, a source disk, the folder a source disk is in, or
    in one of the project's own folders (``reserved``: state, cache, replicas): migrated disks
    must never land on, or next to, what they were copied from or what godwit keeps."""
    where = Path(os.path.realpath(out_dir))
    if where == Path("/"):
        raise UsageError("--out must not be /", hint="pick a folder of its own for the migrated disks")
    for folder in reserved:
        if where.is_relative_to(os.path.realpath(folder)):
            raise UsageError(f"--out {out_dir} is inside the project's {folder.name} folder",
                             hint="pick a folder of its own for the migrated disks")
    for src in sources:
        disk = Path(os.path.realpath(src))
        if where == disk:
            raise UsageError(f"--out {out_dir} is a source disk", hint="pick a folder of its own")
        if where == disk.parent:
            raise UsageError(f"--out {out_dir} is the folder of source disk {src}",
                             hint="pick a folder of its own for the migrated disks")


def check_out_dir(out_dir: Path, need: int) -> None:
    refuse_out_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MigrationError(f"output folder {out_dir} cannot be created: {exc.strerror}") from None
    if not out_dir.is_dir():
        raise MigrationError(f"output folder {out_dir} is not a folder", hint="pick a folder with --out")
    try:  # a fresh private folder proves the folder is writable, and plants nothing to follow
        os.rmdir(tempfile.mkdtemp(prefix=".godwit-probe-", dir=out_dir))
    except OSError as exc:
        raise MigrationError(f"output folder {out_dir} is not writable: {exc.strerror}",
                             hint="pick a folder you can write to with --out") from None
    st = os.statvfs(out_dir)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise MigrationError(f"output folder {out_dir} has {free >> 20} MiB free, the disks need about "
                             f"{need >> 20} MiB", hint="free space or pick another --out")


def _write_sparse(reader: PointReader, fd: int) -> None:
    alloc = reader.allocated()
    runs = alloc if alloc is not None else [(0, reader.size)]
    for off, n in runs:
        for o in range(off, off + n, _IO):
            k = min(_IO, off + n - o)
            data = reader.read(o, k)
            if data.count(0) == k:
                continue
            view = memoryview(data)
            pos = o
            while view:
                w = os.pwrite(fd, view, pos)
                view, pos = view[w:], pos + w


@contextlib.contextmanager
def _private_dir(parent: Path) -> Iterator[Path]:
    tmp = Path(tempfile.mkdtemp(prefix=".godwit-", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _publish(done: Path, out: Path) -> None:
    """Give ``done`` the name ``out`` without ever replacing what is there."""
    try:
        os.link(done, out, follow_symlinks=False)
    except FileExistsError:
        raise MigrationError(f"{out} already exists; godwit does not overwrite a migrated disk",
                             hint="remove it (`godwit migrate cleanup` for a test migration) or pick another "
                                  "--out") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        # A filesystem without hard links: no atomic no-replace rename; check, then rename.
        if os.path.lexists(out):
            raise MigrationError(f"{out} already exists; godwit does not overwrite a migrated disk") from None
        os.rename(done, out)
    fd = os.open(out.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(reader: PointReader, out: Path, fmt: str) -> Path:
    if check_format(fmt) == "pageblob":
        raise UsageError("pageblob is not a file format")
    if os.path.lexists(out):
        raise MigrationError(f"{out} already exists; godwit does not overwrite a migrated disk",
                             hint="remove it (`godwit migrate cleanup` for a test migration) or pick another --out")
    try:
        with _private_dir(out.parent) as tmp:
            partial = tmp / (out.name + ".partial")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            try:
                _write_sparse(reader, fd)
                if fmt == "vhd":
                    from godwit.format.vhd import footer, rounded_size

                    size = rounded_size(reader.size)
                    os.ftruncate(fd, size)
                    os.pwrite(fd, reader.vhd_footer() or footer(size), size)
                else:
                    os.ftruncate(fd, reader.size)
                os.fsync(fd)
            finally:
                os.close(fd)
            if fmt == "qcow2":
                converted = tmp / (out.name + ".qcow2")
                proc = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(partial),
                                       str(converted)], capture_output=True, text=True, check=False)
                if proc.returncode != 0:
                    raise MigrationError(f"qemu-img could not write {out}: {proc.stderr.strip()}")
                partial = converted
            os.chmod(partial, 0o644)
            _publish(partial, out)
    except OSError as exc:
        raise MigrationError(f"cannot write {out}: {exc.strerror}",
                             hint="check free space and permissions of --out") from None
    return out


def has_qemu_img() -> bool:
    return shutil.which("qemu-img") is not None
