"""Writing one recovery point of one disk as raw, fixed VHD or qcow2.

Output goes to ``NAME.partial`` and is renamed only when whole and synced, so a file with the
final name is always complete. Zero runs are skipped (the output is sparse).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
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


def check_out_dir(out_dir: Path, need: int) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MigrationError(f"output folder {out_dir} cannot be created: {exc.strerror}") from None
    # Unique per call: a wave's servers check one folder at once, and must not unlink each other's probe.
    probe = out_dir / f".godwit-write-test-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        probe.write_bytes(b"x")
        probe.unlink()
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


def export(reader: PointReader, out: Path, fmt: str) -> Path:
    if check_format(fmt) == "pageblob":
        raise UsageError("pageblob is not a file format")
    if out.exists():
        raise MigrationError(f"{out} already exists; godwit does not overwrite a migrated disk",
                             hint="remove it (`godwit migrate cleanup` for a test migration) or pick another --out")
    partial = out.with_name(out.name + ".partial")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
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
            tmp = out.with_name(out.name + ".partial.qcow2")
            proc = subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(partial), str(tmp)],
                                  capture_output=True, text=True, check=False)
            partial.unlink()
            if proc.returncode != 0:
                tmp.unlink(missing_ok=True)
                raise MigrationError(f"qemu-img could not write {out}: {proc.stderr.strip()}")
            partial = tmp
        os.replace(partial, out)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise MigrationError(f"cannot write {out}: {exc.strerror}",
                             hint="check free space and permissions of --out") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out


def has_qemu_img() -> bool:
    return shutil.which("qemu-img") is not None
