"""Recording a disk's format once, when it is added; nothing probes it again.

A guest writes its disk's first sector, so a raw disk can claim to be a qcow2 (or VMDK) image
whose backing file, data file or extent is some host file: probing its format at every open would
read that host file into the replica (the classic QEMU hazard). So:

- the format the user gives (``server add --disk-format``) is taken as it is; a file the image
  refers to outside its folder is followed (the user said so) with a warning;
- only when none is given is the format probed (our own magic check, then ``qemu-img info``,
  which opens no backing file); a probed image that refers to other files (backing file, qcow2
  data file, VMDK extent) is warned about, and refused when one lies outside the disk's own folder;
- the recorded format is stored in ``disks.format`` and passed explicitly (``-f``/``driver=``) to
  every qemu-img and qemu-nbd run after that.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from godwit.errors import SourceError, UsageError
from godwit.sources.qemu_img import last_line, qemu_img
from godwit.sources.safe_open import open_readonly

#: Formats read through qemu over NBD (qemu's names: vpc is VHD).
NBD_FORMATS = ("qcow2", "vmdk", "vpc", "vhdx")
FORMATS = ("raw", "block", *NBD_FORMATS)
#: What a user may declare with --disk-format ("block" is what a raw block device is recorded as).
DECLARABLE = ("raw", *NBD_FORMATS)
_CHAIN_MAX = 16


@dataclass(frozen=True)
class Recorded:
    """The format to store for a disk, and what people should know about it."""

    format: str
    warnings: list[str] = field(default_factory=list)


def _head_and_tail(path: Path) -> tuple[bool, bytes, bytes]:
    """(is a block device, first 512 bytes, last 512 bytes), read without following links."""
    fd = open_readonly(path)
    try:
        is_block = stat.S_ISBLK(os.fstat(fd).st_mode)
        size = os.lseek(fd, 0, os.SEEK_END)
        head = os.pread(fd, 512, 0)
        tail = os.pread(fd, 512, size - 512) if size >= 512 else b""
    except OSError as exc:
        raise SourceError(f"disk {path} cannot be read: {exc.strerror}") from None
    finally:
        os.close(fd)
    return is_block, head, tail


def _sniff(head: bytes) -> str:
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV") or head.startswith(b"# Disk DescriptorFile"):
        return "vmdk"
    if head.startswith(b"vhdxfile"):
        return "vhdx"
    if head.startswith(b"conectix"):
        return "vpc"
    return "raw"


def _info(path: Path, fmt: str | None) -> dict[str, Any]:
    """``qemu-img info`` (``fmt`` None: qemu probes; no backing file is opened either way)."""
    args = ["info", "--output=json", "-U", *(["-f", fmt] if fmt else []), str(path)]
    rc, out, err = qemu_img(*args)
    if rc != 0:
        what = f"as {fmt}" if fmt else "as a disk image"
        raise SourceError(f"disk {path} cannot be read {what}: {last_line(err) or 'qemu-img failed'}",
                          hint="check the path and --disk-format (raw, qcow2, vmdk, vpc, vhdx)")
    try:
        info = json.loads(out)
    except ValueError:
        raise SourceError(f"disk {path}: qemu-img info gave no JSON") from None
    return info if isinstance(info, dict) else {}


def _referenced(path: Path, info: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    """Files the image at ``path`` refers to: (what, file name, its format if recorded)."""
    refs: list[tuple[str, str, str | None]] = []
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        fmt = info.get("backing-filename-format")
        refs.append(("backing file", str(backing), str(fmt) if fmt else None))
    data = (info.get("format-specific") or {}).get("data") or {}
    if isinstance(data, dict):
        if data.get("data-file"):
            refs.append(("data file", str(data["data-file"]), "raw"))
        for ext in data.get("extents") or []:
            name = ext.get("filename") if isinstance(ext, dict) else None
            if name and Path(str(name)).resolve() != path.resolve():
                refs.append(("extent", str(name), None))
    return refs


def _inside(folder: Path, ref: str, base: Path) -> Path | None:
    """The file ``ref`` (relative to ``base``'s folder) if it lies inside ``folder``, else None."""
    if ":" in ref.split("/", 1)[0] or ref.startswith("json:"):  # a protocol (nbd:, http:, json:)
        return None
    target = (base.parent / ref).resolve()
    return target if target.is_relative_to(folder) else None


def _check_chain(path: Path, fmt: str, info: dict[str, Any], warnings: list[str]) -> None:
    """Refuse a probed image that refers to a file outside its folder; warn about the others."""
    folder = path.parent.resolve()
    todo = [(path, info)]
    for _ in range(_CHAIN_MAX):
        if not todo:
            return
        image, image_info = todo.pop()
        for what, ref, ref_fmt in _referenced(image, image_info):
            target = _inside(folder, ref, image)
            if target is None:
                raise SourceError(
                    f"disk {path} was detected as {fmt} and its {what} {ref} lies outside the disk's "
                    "folder: godwit does not follow it unless told to",
                    hint=f"if this is a raw disk (a guest can write any header), add it with --disk-format raw; "
                         f"if it is a {fmt} image you trust, add it with --disk-format {fmt}")
            warnings.append(f"disk {path} ({fmt}) reads its {what} {target} as part of the disk")
            if what == "backing file":
                if ref_fmt is None:
                    raise SourceError(f"disk {path}: backing file {target} has no recorded format, so qemu "
                                      "would probe it",
                                      hint=f"record it: `qemu-img rebase -u -F raw -b {ref} {image}` "
                                           "(or the backing file's real format)")
                todo.append((target, _info(target, ref_fmt)))
    raise SourceError(f"disk {path}: its backing chain is longer than {_CHAIN_MAX}",
                      hint="flatten it with `qemu-img convert`")


def record_format(path: Path, declared: str | None = None) -> Recorded:
    """The format to store for the disk at ``path``: ``declared`` if given, else probed safely."""
    if declared is not None and declared not in DECLARABLE:
        raise UsageError(f"disk {path}: unknown disk format {declared!r}",
                          hint=f"use one of {', '.join(DECLARABLE)}")
    is_block, head, tail = _head_and_tail(path)
    if is_block:
        if declared not in (None, "raw"):
            raise SourceError(f"disk {path} is a block device; godwit reads block devices as raw only",
                              hint="drop --disk-format, or give --disk-format raw")
        return Recorded("block")
    if declared == "raw":
        return Recorded("raw")
    warnings: list[str] = []
    if declared is not None:
        if shutil.which("qemu-img") is not None:  # without it, opening reports what is missing
            for what, ref, _ in _referenced(path, _info(path, declared)):
                warnings.append(f"disk {path} ({declared}) reads its {what} {ref}, as --disk-format said")
        return Recorded(declared, warnings)
    sniffed = _sniff(head)
    if shutil.which("qemu-img") is None:
        return Recorded(sniffed)
    info = _info(path, None)
    fmt = str(info.get("format", ""))
    # A fixed VHD has its footer only at the end; qemu-img detects it only as raw. Trust the footer.
    if fmt == "raw" and sniffed == "raw" and tail.startswith(b"conectix"):
        fmt = "vpc"
    if fmt not in FORMATS:
        raise SourceError(f"disk {path} is in format {fmt!r}, which godwit does not read",
                          hint="convert it with `qemu-img convert -O qcow2` or use raw, qcow2, vmdk, vhd, vhdx")
    if fmt != "raw":
        _check_chain(path, fmt, _info(path, fmt) if fmt == "vpc" else info, warnings)
    return Recorded(fmt, warnings)


def probe_format(path: Path) -> str:
    """Return one of FORMATS for the disk at ``path`` (probed safely), or raise SourceError."""
    return record_format(path).format
