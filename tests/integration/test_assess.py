"""`godwit assess` on real Debian guests (debootstrap), replicated by godwit and read through
libguestfs at a recovery point: what a server that would not boot in Azure looks like, what a
ready one looks like, and that the replica's bytes are untouched (verify passes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.guest_images import GuestSpec, build

pytestmark = [pytest.mark.slow]
GiB = 1 << 30


def godwit(root: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "250"}  # tables unwrapped, for the text assertions
    proc = subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(root / "proj")],
                          capture_output=True, text=True, timeout=600, env=env)
    if ok:
        assert proc.returncode == 0, f"godwit {' '.join(args)}: {proc.stderr}"
    return proc


def replicate(root: Path, name: str, disk: Path) -> None:
    godwit(root, "server", "add", name, "--disk", str(disk), "--disk-format", "raw")
    godwit(root, "replicate", "start", name)
    godwit(root, "mover", "run", "--once")


def by_rule(res: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for f in res["findings"]:
        out.setdefault(f["rule"], []).append(f)
    return out


LEGACY_NET = ("auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet static\n"
              "    address 192.0.2.10/24\n    gateway 192.0.2.1\n    hwaddress ether 52:54:00:12:34:56\n")
@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("assess")
    subprocess.run([sys.executable, "-m", "godwit", "init", str(root / "proj")], check=True, capture_output=True)
    return root


def test_legacy_server_is_not_ready_and_replica_untouched(root: Path) -> None:
    # A 20 GiB OS disk, as an on-premises server has: MBR, root by device name, a static address
    # on a pinned MAC, no Hyper-V drivers in the initramfs, no agent.
    disk = build(root / "legacy.raw", GuestSpec(
        table="dos", disk_size=20 * GiB, fstab="/dev/sda1 / ext4 errors=remount-ro 0 1\n",
        files={"etc/network/interfaces": LEGACY_NET}))
    replicate(root, "legacy", disk)
    res = json.loads(godwit(root, "assess", "legacy", "--json").stdout)
    assert res["seconds"] > 0  # reported; its speed is a figure of docs/benchmarks.md, not a test's bound

    assert res["status"] == "not_ready" and res["recovery_point"] == 1
    assert res["os"]["distro"] == "debian" and res["os"]["version"].startswith("12.")
    assert res["generation"] == 1
    rules = by_rule(res)
    assert rules["os.endorsed"] and rules["boot.gen1"]
    assert rules["disk.size_ok"][0]["title"].startswith("disk0: 20 GiB")
    missing = rules["kernel.hyperv_missing"][0]
    assert missing["status"] == "not_ready" and "hv_vmbus, hv_storvsc" in missing["title"]
    assert "learn.microsoft.com" in missing["source"] and missing["fix"]
    fstab = rules["fstab.device_name"][0]
    assert "/dev/sda1" in fstab["title"] and fstab["status"] == "not_ready"
    assert "192.0.2" not in json.dumps(rules["network.static"])  # the rule names the file and interface
    assert rules["network.static"][0]["title"].startswith("/etc/network/interfaces gives eth0")
    assert "52:54:00:12:34:56" in rules["network.mac"][0]["title"]
    assert rules["agent.missing"][0]["status"] == "warning"
    assert rules["network.static"][0]["fix"].startswith("configure the primary interface for DHCP")


def test_ready_gen2_server(root: Path) -> None:
    netplan = ("network:\n  version: 2\n  ethernets:\n    eth0:\n      match:\n        driver: hv_netvsc\n"
               "      dhcp4: true\n")
    disk = build(root / "ready.raw", GuestSpec(
        table="gpt", initrd_modules=("ext4", "hv_vmbus", "hv_storvsc", "hv_netvsc"),
        files={"etc/netplan/50-cloud-init.yaml": netplan, "etc/cloud/cloud.cfg": "datasource_list: [Azure]\n"}))
    replicate(root, "ready", disk)
    text = godwit(root, "assess", "ready", "--recovery-point", "1").stdout  # the human output
    head = text.splitlines()[0]
    assert head.startswith("ready at recovery point 1: debian 12.") and "Gen2" in head and head.endswith("— ready")
    for title in ("UEFI boot from a GPT disk", "hv_netvsc, hv_storvsc, hv_vmbus", "names its filesystems by UUID",
                  "no network configuration tied", "cloud-init installed"):
        assert title in text, text
    assert "not ready" not in text and "warning" not in text
    # Read-only: the replica still hashes to its recorded block hashes.
    godwit(root, "verify", "ready")


def test_unknown_point_and_server(root: Path) -> None:
    proc = godwit(root, "assess", "ready", "--recovery-point", "9", ok=False)  # made by the test above
    assert proc.returncode == 4 and "not available" in proc.stderr
    proc = godwit(root, "assess", "nobody", ok=False)
    assert proc.returncode == 4 and "Traceback" not in proc.stderr
