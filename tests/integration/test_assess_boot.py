"""`godwit prepare --for azure` on a test migration of a bootable Debian guest (a real kernel and
initramfs-tools, its initramfs without the Hyper-V drivers, root by device name, a static address
on a pinned MAC): the migrated disk is fixed in the guest's own tools, then boots under QEMU to a
login prompt with the root filesystem found by UUID; the replica is untouched (verify passes)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from godwit.assess import cpio
from tests.guest_images import GuestSpec, build
from tests.integration.test_assess import LEGACY_NET, godwit, replicate

pytestmark = [pytest.mark.slow]
UDEV_RULE = 'SUBSYSTEM=="net", ATTR{address}=="52:54:00:12:34:56", NAME="eth0"\n'


def _debugfs(disk: Path, request: str) -> str:
    """The test's own (trusted) image, read by debugfs from the partition at 1 MiB."""
    return subprocess.run(["debugfs", "-R", request, f"{disk}?offset={1 << 20}"], capture_output=True,
                          text=True, check=True).stdout


def _hv_in_initrd(disk: Path, kver: str, dump: Path) -> list[str]:
    _debugfs(disk, f"dump /boot/initrd.img-{kver} {dump}")
    with open(dump, "rb") as f:
        names = cpio.names(iter(lambda: f.read(1 << 20), b""))
    return sorted(n.rsplit("/", 1)[-1] for n in names if "/hv_" in n)


def _boot(disk: Path, kernel: Path, initrd: Path, root_uuid: str, log: Path) -> str:
    """Boot the disk (virtio, a snapshot: nothing written) under TCG until a login prompt."""
    cmd = ["qemu-system-x86_64", "-machine", "accel=tcg", "-m", "768", "-nographic", "-no-reboot", "-nic", "none",
           "-kernel", str(kernel), "-initrd", str(initrd),
           "-append", f"root=UUID={root_uuid} ro console=ttyS0 panic=-1",
           "-drive", f"file={disk},format=raw,if=virtio,snapshot=on"]
    with open(log, "wb") as out, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT) as qemu:
        try:
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and qemu.poll() is None:
                if b"login:" in log.read_bytes():
                    break
                time.sleep(1)
        finally:
            qemu.kill()
    return log.read_bytes().decode("utf-8", "replace")


def test_prepared_disk_boots(tmp_path: Path) -> None:
    root = tmp_path
    subprocess.run([sys.executable, "-m", "godwit", "init", str(root / "proj")], check=True, capture_output=True)
    spec = GuestSpec(tree="kernel", disk_size=2 << 30, fstab="/dev/sda1 / ext4 errors=remount-ro 0 1\n",
                     files={"etc/network/interfaces": LEGACY_NET,
                            "etc/udev/rules.d/70-persistent-net.rules": UDEV_RULE})
    replicate(root, "old", build(root / "old.raw", spec))
    out = root / "migrated"
    kver = _debugfs(root / "old.raw", "ls -p /boot").split("/vmlinuz-", 1)[1].split("/", 1)[0]
    assert _hv_in_initrd(root / "old.raw", kver, root / "before.img") == []
    migrated = json.loads(godwit(root, "migrate", "old", "--test", "--out", str(out), "--format", "raw",
                                 "--prepare-for", "azure", "--json").stdout)
    disk = out / "old-disk0.raw"
    assert migrated["files"] == [str(disk)]
    res = migrated["prepared"]
    changed = {c["file"]: c["change"] for c in res["changes"]}
    assert changed["/etc/fstab"] == f"/dev/sda1 → UUID={spec.fs_uuid} (/)"
    assert changed["/etc/network/interfaces"].startswith("DHCP for eth0")
    assert changed["/etc/udev/rules.d/70-persistent-net.rules"].startswith("disabled")
    assert changed["/etc/initramfs-tools/modules"] == "added hv_vmbus, hv_storvsc, hv_netvsc"
    assert changed[f"/boot/initrd.img-{kver}"] == f"rebuilt: update-initramfs -u -k {kver}"
    assert res["refused"] == []
    assert json.loads(Path(res["report"]).read_text())["changes"] == res["changes"]

    assert _debugfs(disk, "cat /etc/fstab") == f"UUID={spec.fs_uuid} / ext4 errors=remount-ro 0 1\n"
    assert _debugfs(disk, "cat /etc/fstab.godwit-orig").startswith("/dev/sda1 ")
    net = _debugfs(disk, "cat /etc/network/interfaces")
    assert "iface eth0 inet dhcp" in net and "192.0.2" not in net and "hwaddress" not in net
    assert "52:54:00" in _debugfs(disk, "cat /etc/udev/rules.d/70-persistent-net.rules.godwit-disabled")
    assert _hv_in_initrd(disk, kver, root / "after.img") == ["hv_netvsc.ko", "hv_storvsc.ko", "hv_vmbus.ko"]

    # QEMU has no VMBus: the boot proves the rebuilt initramfs and the UUID root work, on virtio
    # (where /dev/sda1, the old fstab's device, does not exist).
    _debugfs(disk, f"dump /boot/vmlinuz-{kver} {root / 'vmlinuz'}")
    console = _boot(disk, root / "vmlinuz", root / "after.img", spec.fs_uuid, root / "console.log")
    assert "EXT4-fs (vda1): mounted filesystem" in console, console[-3000:]
    assert "guest login:" in console, console[-3000:]

    godwit(root, "verify", "old")  # the replica's own bytes are unchanged
    godwit(root, "migrate", "cleanup", "old")  # restamped: cleanup still knows the prepared files
    assert not disk.exists() and not Path(res["report"]).exists()
