"""Reading a guest's facts through libguestfs, in a child process (``python -m godwit.assess.guest``).

The parent serves each disk over NBD (``nbd_server``) and runs this module with a wall-clock
timeout, killing its whole process group (the appliance's qemu included) when it runs out: a
hostile filesystem can make the appliance's kernel spin, and no libguestfs call has a timeout of
its own. The guest's disks are added read-only with an explicit ``raw`` format (never probed),
and its filesystems are mounted read-only inside the appliance, never on this host.

What comes back (JSON on stdout) is facts, not judgements: small guest files as text, which
files exist, the partition tables, the initramfs's file names. ``evaluate`` judges them.
Every guest file is read with limits: a symlink loop, a device node or a file larger than
``MAX_TEXT`` where a small text file belongs is an error that names the file.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

from godwit.assess import cpio

MAX_TEXT = 1 << 20
MAX_INITRD = 1 << 30
MAX_CONFIG_FILES = 64
ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
BIOS_BOOT = "21686148-6449-6E6F-744E-656564454649"
HV_MODULES = ("hv_vmbus", "hv_storvsc", "hv_netvsc")
CONFIG_GLOBS = {  # folder: file name pattern — network configuration that may pin a MAC or an address
    "/etc/netplan": r".+\.ya?ml",
    "/etc/sysconfig/network-scripts": r"ifcfg-.+",
    "/etc/sysconfig/network": r"ifcfg-.+",
    "/etc/NetworkManager/system-connections": r".+",
    "/etc/systemd/network": r".+\.(network|link)",
    "/etc/network/interfaces.d": r"[^.]+",
    "/etc/udev/rules.d": r".*persistent-net.*\.rules",
}
#: Files libguestfs's own inspection reads (through augeas, without limits) from every filesystem it
#: probes: checked first, so a huge or looping one is an error naming it, not a spinning appliance.
INSPECTED = ("/etc/fstab", "/etc/os-release", "/usr/lib/os-release", "/etc/lsb-release", "/etc/debian_version",
             "/etc/redhat-release", "/etc/system-release", "/etc/SuSE-release", "/etc/hostname", "/etc/HOSTNAME",
             "/etc/machine-id", "/etc/sysconfig/network", "/etc/mdadm.conf", "/etc/mdadm/mdadm.conf",
             "/etc/alpine-release", "/etc/arch-release", "/etc/gentoo-release")
SINGLE_FILES = ("/etc/fstab", "/etc/network/interfaces", "/etc/crypttab", "/etc/os-release")
AGENTS = {
    "waagent": ("/usr/sbin/waagent", "/usr/bin/waagent", "/usr/local/sbin/waagent"),
    "cloud-init": ("/usr/bin/cloud-init", "/usr/local/bin/cloud-init", "/etc/cloud/cloud.cfg"),
}


class GuestProblem(Exception):
    """The guest cannot be assessed; the message says why, naming the file or disk."""


def _kernel_key(version: str) -> list[Any]:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", version)]


class Guest:
    def __init__(self, g: Any) -> None:
        self.g = g

    # -- reading guest files, with limits -------------------------------------------------
    def _is_file(self, path: str) -> bool:
        try:
            return bool(self.g.is_file(path, followsymlinks=True))
        except RuntimeError as exc:  # ELOOP and the like
            raise GuestProblem(f"guest file {path}: {exc}") from None

    def text(self, path: str) -> str | None:
        """A small guest text file, None when absent; an error when it is not a small regular file."""
        try:
            exists = bool(self.g.exists(path))
        except RuntimeError as exc:
            raise GuestProblem(f"guest file {path}: {exc}") from None
        if not exists and not self.g.is_symlink(path):
            return None
        if not self._is_file(path):
            raise GuestProblem(f"guest file {path} is not a regular file (a dangling link, a loop or a device)")
        size = int(self.g.filesize(path))
        if size > MAX_TEXT:
            raise GuestProblem(f"guest file {path} is {size >> 20} MiB, far more than such a file holds "
                               f"(godwit reads at most {MAX_TEXT >> 20} MiB)")
        return bytes(self.g.read_file(path)).decode("utf-8", "replace")

    def chunks(self, path: str, size: int) -> Iterator[bytes]:
        for off in range(0, size, 1 << 20):
            data = bytes(self.g.pread(path, min(1 << 20, size - off), off))
            if not data:
                return
            yield data

    # -- disks ----------------------------------------------------------------------------
    def disks(self) -> list[dict[str, Any]]:
        out = []
        for i, dev in enumerate(self.g.list_devices()):
            d: dict[str, Any] = {"index": i, "device": dev, "size": int(self.g.blockdev_getsize64(dev)),
                                 "partition_table": None, "esp": False, "bios_boot": False}
            with contextlib.suppress(RuntimeError):  # no partition table: a whole-disk filesystem or empty
                d["partition_table"] = self.g.part_get_parttype(dev)
            if d["partition_table"] == "gpt":
                for p in self.g.part_list(dev):
                    guid = str(self.g.part_get_gpt_type(dev, p["part_num"])).upper()
                    d["esp"] |= guid == ESP
                    d["bios_boot"] |= guid == BIOS_BOOT
            elif d["partition_table"] == "msdos":
                for p in self.g.part_list(dev):
                    with contextlib.suppress(RuntimeError):  # an extended partition's logical parts
                        d["esp"] |= int(self.g.part_get_mbr_id(dev, p["part_num"])) == 0xEF
            out.append(d)
        return out

    def encrypted(self) -> list[str]:
        return sorted(dev for dev, kind in self.g.list_filesystems().items() if kind == "crypto_LUKS")

    def precheck(self) -> None:
        """Every filesystem's files that inspection will read: small regular files, or absent."""
        for dev, kind in sorted(self.g.list_filesystems().items()):
            if kind in ("swap", "unknown", "crypto_LUKS", "LVM2_member", "ntfs", "vfat"):
                continue
            try:
                self.g.mount_ro(dev, "/")
            except RuntimeError:
                continue  # inspection will not use it either
            try:
                for path in INSPECTED:
                    self.text(path)
            except GuestProblem as exc:
                raise GuestProblem(f"{dev}: {exc}") from None
            finally:
                self.g.umount_all()

    # -- the operating system -------------------------------------------------------------
    def mount(self, root: str) -> None:
        points = self.g.inspect_get_mountpoints(root)
        for mp, dev in sorted(points.items(), key=lambda kv: len(kv[0])):
            try:
                self.g.mount_ro(dev, mp)
            except RuntimeError as exc:
                if mp == "/":
                    raise GuestProblem(f"the root filesystem {dev} does not mount read-only: {exc}") from None

    def os_facts(self, root: str) -> dict[str, Any]:
        g = self.g
        return {"type": g.inspect_get_type(root), "distro": g.inspect_get_distro(root),
                "product": g.inspect_get_product_name(root), "major": g.inspect_get_major_version(root),
                "minor": g.inspect_get_minor_version(root), "arch": g.inspect_get_arch(root), "root": root}

    def kernel(self) -> dict[str, Any]:
        """The default kernel (the /vmlinuz link, else the newest in /boot) and its initramfs's drivers."""
        g = self.g
        versions = []
        if g.is_dir("/boot"):
            versions = [n[len("vmlinuz-"):] for n in g.ls("/boot") if n.startswith("vmlinuz-")]
        default = None
        for link in ("/vmlinuz", "/boot/vmlinuz"):
            if g.is_symlink(link):
                target = str(g.readlink(link)).rsplit("/", 1)[-1]
                if target.startswith("vmlinuz-") and target[len("vmlinuz-"):] in versions:
                    default = target[len("vmlinuz-"):]
                    break
        if default is None and versions:
            default = max(versions, key=_kernel_key)
        k: dict[str, Any] = {"version": default, "versions": sorted(versions, key=_kernel_key),
                             "initrd": None, "initrd_modules": [], "builtin": [], "error": None}
        if default is None:
            return k
        for lib in ("/lib/modules", "/usr/lib/modules"):
            builtin = self.text(f"{lib}/{default}/modules.builtin") if g.is_dir(f"{lib}/{default}") else None
            if builtin is not None:
                k["builtin"] = sorted({m for m in HV_MODULES if re.search(rf"/{m}\.ko\b", builtin)})
                break
        for cand in (f"/boot/initrd.img-{default}", f"/boot/initramfs-{default}.img", f"/boot/initrd-{default}"):
            if g.exists(cand) or g.is_symlink(cand):
                k["initrd"] = cand
                break
        if k["initrd"] is None:
            return k
        if not self._is_file(k["initrd"]):
            raise GuestProblem(f"guest file {k['initrd']} is not a regular file")
        size = int(g.filesize(k["initrd"]))
        if size > MAX_INITRD:
            raise GuestProblem(f"guest file {k['initrd']} is {size >> 20} MiB: no initramfs is that big")
        try:
            names = cpio.names(self.chunks(k["initrd"], size))
        except cpio.InitramfsError as exc:
            k["error"] = str(exc)
            return k
        stems = {n.rsplit("/", 1)[-1].split(".ko", 1)[0] for n in names if ".ko" in n}
        k["initrd_modules"] = sorted(m for m in HV_MODULES if m in stems)
        return k

    def config_files(self) -> dict[str, str]:
        files: dict[str, str] = {}
        for path in SINGLE_FILES:
            if (t := self.text(path)) is not None:
                files[path] = t
        for folder, pattern in CONFIG_GLOBS.items():
            if not self.g.is_dir(folder, followsymlinks=True):
                continue
            for name in sorted(self.g.ls(folder)):
                if re.fullmatch(pattern, name) and len(files) < MAX_CONFIG_FILES:
                    path = f"{folder}/{name}"
                    if self.g.is_dir(path, followsymlinks=True):
                        continue
                    if (t := self.text(path)) is not None:
                        files[path] = t
        return files

    def agents(self) -> dict[str, bool]:
        return {name: any(self.g.exists(p) or self.g.is_symlink(p) for p in paths) for name, paths in AGENTS.items()}

    def windows(self, root: str) -> dict[str, Any]:
        """Hyper-V driver services from the SYSTEM hive: their Start value (0 = boot, 4 = disabled)."""
        g = self.g
        drivers: dict[str, int | None] = {}
        hive = g.inspect_get_windows_system_hive(root)
        g.hivex_open(hive, write=False)
        try:
            node = g.hivex_root()
            select = g.hivex_node_get_child(node, "Select")
            current = g.hivex_value_dword(g.hivex_node_get_value(select, "Current")) if select else 1
            cs = g.hivex_node_get_child(node, f"ControlSet{current:03d}")
            services = g.hivex_node_get_child(cs, "Services") if cs else 0
            for svc in ("vmbus", "storvsc", "netvsc"):
                child = g.hivex_node_get_child(services, svc) if services else 0
                start = g.hivex_node_get_value(child, "Start") if child else 0
                drivers[svc] = int(g.hivex_value_dword(start)) if start else None
        finally:
            g.hivex_close()
        return {"drivers": drivers}


def collect(sockets: list[str]) -> dict[str, Any]:
    import guestfs

    g = guestfs.GuestFS(python_return_dict=True)
    try:
        for s in sockets:
            g.add_drive_opts("", format="raw", readonly=True, protocol="nbd", server=[f"unix:{s}"])
        g.set_network(False)
        g.launch()
        guest = Guest(g)
        facts: dict[str, Any] = {"disks": guest.disks(), "encrypted": guest.encrypted(), "os": None}
        guest.precheck()
        roots = g.inspect_os()
        if not roots:
            return facts
        root = roots[0]
        facts["os"] = guest.os_facts(root)
        guest.mount(root)
        facts["root_device"] = str(g.inspect_get_mountpoints(root).get("/", root))
        if facts["os"]["type"] == "windows":
            try:
                facts["windows"] = guest.windows(root)
            except RuntimeError as exc:  # no hive, or one hivex cannot parse: reported, not fatal
                facts["windows"] = {"error": str(exc)}
        elif facts["os"]["type"] == "linux":
            facts["kernel"] = guest.kernel()
            facts["files"] = guest.config_files()
            facts["agents"] = guest.agents()
        return facts
    finally:
        try:
            g.shutdown()
        finally:
            g.close()


def main(argv: list[str]) -> int:
    try:
        facts = collect(argv)
    except GuestProblem as exc:
        json.dump({"error": str(exc)}, sys.stdout)
        return 3
    except RuntimeError as exc:  # libguestfs's own errors: the message names the call
        json.dump({"error": f"libguestfs: {exc}"}, sys.stdout)
        return 3
    json.dump(facts, sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
