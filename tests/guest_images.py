"""Real Linux guest disks for the assessment tests, built without mounting anything on the host.

The root filesystem is a Debian bookworm `debootstrap --variant=minbase` tree (cached in
``.tools/guest/`` so CI pays for it once, about 25 s), copied, given the test's own files, and
written into an ext4 image by ``mkfs.ext4 -d``; ``sfdisk`` lays out the partition table around it.
The kernel is the host's (Debian's linux-image-amd64, which libguestfs's appliance needs anyway);
the initramfs is written by the test, so that it holds exactly the drivers the test wants.
"""

from __future__ import annotations

import fcntl
import glob
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from godwit.assess.cpio import gzip_archive

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".tools" / "guest"
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
KVER = "6.1.0-godwit-test"
MiB = 1 << 20


def mirror() -> str:
    """The Debian mirror apt is configured with (deb822 or one-line sources)."""
    for f in [*sorted(glob.glob("/etc/apt/sources.list.d/*")), "/etc/apt/sources.list"]:
        try:
            text = Path(f).read_text()
        except OSError:
            continue
        for line in text.splitlines():
            parts = line.split()
            if parts[:1] == ["URIs:"] and len(parts) > 1 and "security" not in parts[1]:
                return parts[1]
            if parts[:1] == ["deb"] and len(parts) > 2 and "security" not in parts[-2]:
                return next(p for p in parts[1:] if p.startswith("http"))
    return MIRROR


#: Trees by name: the packages added to minbase. "kernel" boots (a real kernel, initramfs-tools,
#: systemd), its initramfs built with MODULES=list and without the Hyper-V drivers.
TREES = {"minbase": [], "kernel": ["linux-image-amd64", "initramfs-tools", "systemd-sysv", "zstd"]}
BOOT_MODULES = "virtio_pci\nvirtio_blk\next4\n"


def base_tree(kind: str = "minbase") -> Path:
    """The cached tree, made on first use (atomically: a killed run leaves no half tree), once per
    host: pytest-xdist workers wanting the same tree wait on a lock for the first one's."""
    tree = CACHE / f"{SUITE}-{kind}"
    if (tree / "etc" / "os-release").exists():
        return tree
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f".{SUITE}-{kind}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also by a killed worker
        if (tree / "etc" / "os-release").exists():
            return tree  # another worker made it while this one waited
        return _make_tree(kind, tree)


def _make_tree(kind: str, tree: Path) -> Path:
    tmp = CACHE / f".{SUITE}-{kind}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    include = [f"--include={','.join(TREES[kind])}"] if TREES[kind] else []
    subprocess.run(["debootstrap", "--variant=minbase", *include, SUITE, str(tmp), mirror()], check=True,
                   capture_output=True, timeout=1800)
    if kind == "kernel":
        conf = tmp / "etc" / "initramfs-tools"
        text = (conf / "initramfs.conf").read_text()
        (conf / "initramfs.conf").write_text(text.replace("MODULES=most", "MODULES=list"))
        (conf / "modules").write_text(BOOT_MODULES)
        subprocess.run(["chroot", str(tmp), "update-initramfs", "-u", "-k", "all"], check=True, capture_output=True)
    os.replace(tmp, tree)
    return tree


@dataclass
class GuestSpec:
    """What the test wants in the guest. Paths in ``files`` are relative to the root."""

    table: str = "dos"  # or "gpt" (an EFI system partition first)
    tree: str = "minbase"  # or "kernel": its own kernel and initramfs, no test-made ones
    fs_uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    initrd_modules: tuple[str, ...] = ("ext4", "crc16", "mbcache", "jbd2")
    fstab: str | None = None  # default: the root by UUID
    files: dict[str, str] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)  # path: target (hostile images: loops)
    sparse: dict[str, int] = field(default_factory=dict)  # path: size (hostile images: huge files)
    disk_size: int = 1024 * MiB


def _initrd(modules: tuple[str, ...]) -> bytes:
    where = {"hv_vmbus": "drivers/hv", "hv_storvsc": "drivers/scsi", "hv_netvsc": "drivers/net/hyperv"}
    files = {"init": b"#!/bin/sh\n", "conf/initramfs.conf": b"MODULES=list\n"}
    for m in modules:
        files[f"usr/lib/modules/{KVER}/kernel/{where.get(m, 'fs')}/{m}.ko"] = b"\x7fELF" + bytes(60)
    return gzip_archive(files)


def _test_kernel(staging: Path, spec: GuestSpec) -> None:
    """The host's kernel image, and an initramfs holding exactly ``spec.initrd_modules``."""
    boot = staging / "boot"
    boot.mkdir(exist_ok=True)
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    kernel = Path(kernels[-1]).read_bytes() if kernels else b"not a kernel"
    (boot / f"vmlinuz-{KVER}").write_bytes(kernel)
    (boot / f"initrd.img-{KVER}").write_bytes(_initrd(spec.initrd_modules))
    mods = staging / "usr" / "lib" / "modules" / KVER
    mods.mkdir(parents=True, exist_ok=True)
    (mods / "modules.builtin").write_text("kernel/fs/ext4/ext4.ko\n")
    os.symlink(f"boot/vmlinuz-{KVER}", staging / "vmlinuz")


def build(path: Path, spec: GuestSpec) -> Path:
    """A raw disk image at ``path`` holding a bootstrapped Debian root as ``spec`` says."""
    staging = path.with_name(path.name + ".root")
    shutil.rmtree(staging, ignore_errors=True)
    subprocess.run(["cp", "-a", "--reflink=auto", str(base_tree(spec.tree)), str(staging)], check=True)
    try:
        if spec.tree == "minbase":
            _test_kernel(staging, spec)
        fstab = spec.fstab if spec.fstab is not None else f"UUID={spec.fs_uuid} / ext4 errors=remount-ro 0 1\n"
        (staging / "etc" / "fstab").write_text(fstab)
        (staging / "etc" / "hostname").write_text("guest\n")
        for rel, text in spec.files.items():
            p = staging / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        for rel, target in spec.links.items():
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (staging / rel).unlink(missing_ok=True)
            os.symlink(target, staging / rel)
        for rel, size in spec.sparse.items():
            with open(staging / rel, "wb") as f:
                f.truncate(size)
                f.write(b"# a huge file\n")

        esp = 64 * MiB if spec.table == "gpt" else 0
        fs_size = spec.disk_size - 2 * MiB - esp
        with open(path, "wb") as f:
            f.truncate(spec.disk_size)
        if spec.table == "gpt":
            layout = (f"label: gpt\nstart=2048, size={esp // 512}, type=U\n"
                      f"start={(MiB + esp) // 512}, size={fs_size // 512}, type=L\n")
        else:
            layout = f"label: dos\nstart=2048, size={fs_size // 512}, type=83, bootable\n"
        subprocess.run(["sfdisk", "-q", str(path)], input=layout, text=True, check=True, capture_output=True)
        # Written in place at the partition's offset: no copy of a 20 GiB file system image.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-U", spec.fs_uuid, "-L", "root", "-d", str(staging),
                        "-E", f"offset={MiB + esp}", str(path), f"{fs_size // 1024}k"], check=True, capture_output=True)
        return path
    finally:
        shutil.rmtree(staging, ignore_errors=True)
