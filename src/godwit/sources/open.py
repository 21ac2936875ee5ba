"""Opening a disk SPEC: detect its format, pick the reader."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

from godwit.errors import SourceError
from godwit.sources.base import DiskSource
from godwit.sources.file import FileSource

#: Formats read through qemu over NBD (qemu's names: vpc is VHD).
NBD_FORMATS = ("qcow2", "vmdk", "vpc", "vhdx")
FORMATS = ("raw", "block", *NBD_FORMATS)


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vpc"
    return "raw"


def probe_format(path: Path) -> str:
    """Return one of FORMATS for the disk at ``path``, or raise SourceError."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SourceError(f"disk {path} does not exist", hint="check the path") from None
    except OSError as exc:
        raise SourceError(f"disk {path} cannot be read: {exc.strerror}") from None
    if stat.S_ISBLK(st.st_mode):
        return "block"
    if not stat.S_ISREG(st.st_mode):
        raise SourceError(f"disk {path} is neither a file nor a block device")
    try:
        sniffed = _sniff(path)
    except PermissionError:
        raise SourceError(f"disk {path} is not readable (permission denied)") from None
    if shutil.which("qemu-img") is None:
        return sniffed
    proc = subprocess.run(["qemu-img", "info", "--output=json", "-U", str(path)],
                          capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "qemu-img failed"
        raise SourceError(f"disk {path} cannot be read as a disk image: {msg}")
    fmt = str(json.loads(proc.stdout).get("format", ""))
    # A fixed VHD has its footer only at the end; qemu-img detects it only as raw. Trust the footer.
    if fmt == "raw" and sniffed == "raw" and st.st_size >= 512:
        with open(path, "rb") as f:
            f.seek(st.st_size - 512)
            if f.read(8) == b"conectix":
                fmt = "vpc"
    if fmt not in FORMATS:
        raise SourceError(f"disk {path} is in format {fmt!r}, which godwit does not read",
                          hint="convert it with `qemu-img convert -O qcow2` or use raw, qcow2, vmdk, vhd, vhdx")
    return fmt


def open_source(path: Path, fmt: str, *, snapshot_dir: Path | None = None) -> DiskSource:
    """Open a disk for one cycle. ``snapshot_dir`` enables a point-in-time view where possible."""
    if fmt in ("raw", "block"):
        return FileSource(path, snapshot_dir=snapshot_dir)
    if fmt in NBD_FORMATS:
        from godwit.sources.nbd import NbdSource

        return NbdSource.for_image(path, fmt, snapshot=snapshot_dir is not None)
    raise SourceError(f"disk {path}: unknown format {fmt!r}")
