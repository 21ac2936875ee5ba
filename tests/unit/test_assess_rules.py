"""The assessment's pure parts: the rule book as data, the judgement of facts, the config parsers,
the initramfs reader's limits, and the read-only NBD export (against libnbd, a real client)."""

from __future__ import annotations

import gzip
import os
import re
from pathlib import Path
from typing import Any

import pytest

from godwit.assess import cpio, linux_config
from godwit.assess.evaluate import evaluate
from godwit.assess.rules import load, worst
from godwit.replicas.base import PointReader

SRC = Path(__file__).resolve().parents[2] / "src" / "godwit" / "assess"


def test_every_rule_is_used_and_every_used_rule_exists() -> None:
    book = load("azure")
    code = "\n".join(p.read_text() for p in SRC.glob("*.py"))
    used = set(re.findall(r'book\["([a-z_.]+)"\]', code))
    used |= {f"network.{k}" for k in ("static", "mac", "persistent_rules")}  # book[f"network.{kind}"]
    used |= {"boot.gen1", "boot.gen2", "boot.gpt_bios", "boot.unknown"}  # returned by generation()
    assert used == set(book.rules)
    for r in book.rules.values():
        assert r.status in ("ready", "warning", "not_ready")
        assert r.source.startswith("https://learn.microsoft.com/"), r.id
        assert (r.fix == "") == (r.status == "ready"), r.id  # what to do, whenever something is to do


def test_guest_text_is_never_a_template() -> None:
    f = load()["fstab.device_name"].finding(mountpoint="{device}", device="/dev/sda1 {0} {__class__}")
    assert f.title == "/etc/fstab mounts {device} from /dev/sda1 {0} {__class__}, a device name that changes in Azure"


def _facts(**over: Any) -> dict[str, Any]:
    facts: dict[str, Any] = {
        "disks": [{"index": 0, "device": "/dev/sda", "size": 30 << 30, "partition_table": "gpt", "esp": True,
                   "bios_boot": False},
                  {"index": 1, "device": "/dev/sdb", "size": 40000 << 30, "partition_table": None, "esp": False,
                   "bios_boot": False}],
        "encrypted": [], "root_device": "/dev/sda2",
        "os": {"type": "linux", "distro": "ubuntu", "product": "Ubuntu 16.04", "major": 16, "minor": 4,
               "arch": "x86_64", "root": "/dev/sda2"},
        "kernel": {"version": "4.4.0", "initrd": "/boot/initrd.img-4.4.0", "initrd_modules": ["hv_vmbus"],
                   "builtin": ["hv_storvsc"], "error": None},
        "files": {"/etc/fstab": "UUID=x / ext4 defaults 0 1\n/dev/sdb1 /data xfs defaults 0 0\n"},
        "agents": {"waagent": True, "cloud-init": False},
    }
    facts.update(over)
    return facts


def test_evaluate_judges_each_fact() -> None:
    findings, gen = evaluate(load(), _facts())
    by = {f.rule: f for f in findings}
    assert gen == 2
    assert by["os.not_endorsed"].status == "warning"  # 16.04 is older than the endorsed 18
    assert by["disk.data_too_big"].title.startswith("disk1, a data disk, is 40000 GiB")
    assert by["kernel.netvsc_missing"].status == "warning"  # vmbus in the initramfs, storvsc built in
    assert "/dev/sdb1" in by["fstab.device_name"].title
    assert "waagent installed" in by["agent.present"].title
    assert worst(findings) == "not_ready"


def test_evaluate_encrypted_and_windows() -> None:
    findings, gen = evaluate(load(), _facts(os=None, encrypted=["/dev/sda3"]))
    assert [f.rule for f in findings] == ["os.encrypted"] and gen is None
    win = {"type": "windows", "distro": "windows", "product": "Windows Server 2019", "major": 10, "minor": 0,
           "arch": "x86_64", "root": "/dev/sda2"}
    disks = [{"index": 0, "device": "/dev/sda", "size": 2 << 40, "partition_table": "msdos", "esp": False,
              "bios_boot": False}]
    findings, gen = evaluate(load(), {"disks": disks, "encrypted": [], "os": win, "root_device": "/dev/sda2",
                                      "windows": {"drivers": {"vmbus": 0, "storvsc": 3, "netvsc": None}}})
    by = {(f.rule, f.title.split(":")[0]): f for f in findings}
    assert gen == 1 and ("disk.size_ok", "disk0") in by  # 2048 GiB: exactly the Gen1 limit
    assert by[("windows.driver_ok", "Windows driver vmbus")].status == "ready"
    assert "Start=3 (not at boot)" in by[("windows.driver_off", "Windows driver storvsc")].title
    assert "not installed" in by[("windows.driver_off", "Windows driver netvsc")].title


@pytest.mark.parametrize(("path", "text", "kinds"), [
    ("/etc/network/interfaces", "iface lo inet loopback\niface eth0 inet dhcp\n", []),
    ("/etc/network/interfaces", "iface ens3 inet static\n  address 10.1.1.1/24\n", [("static", "ens3")]),
    ("/etc/netplan/01.yaml", "network:\n  ethernets:\n    eth0:\n      match:\n        macaddress: 00:15:5d:01:02:03\n"
                             "      addresses: [10.0.0.4/24]\n      nameservers:\n        addresses: [1.1.1.1]\n",
     [("mac", "eth0"), ("static", "eth0")]),
    ("/etc/netplan/01.yaml", "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n"
                             "      nameservers:\n        addresses: [1.1.1.1]\n", []),
    ("/etc/sysconfig/network-scripts/ifcfg-eth0",
     'DEVICE=eth0\nBOOTPROTO=none\nIPADDR=10.0.0.5\nHWADDR="52:54:00:aa:bb:cc"\n',
     [("mac", "eth0"), ("static", "eth0")]),
    ("/etc/NetworkManager/system-connections/w.nmconnection",
     "[connection]\ninterface-name=enp1s0\n[ethernet]\nmac-address=52:54:00:aa:bb:cc\n[ipv4]\nmethod=auto\n",
     [("mac", "enp1s0")]),
    ("/etc/systemd/network/10.network", "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.9/24\n", [("static", "eth0")]),
    ("/etc/systemd/network/10.network", "[Match]\nName=eth0\n[Network]\nDHCP=yes\n", []),
    ("/etc/udev/rules.d/70-persistent-net.rules", 'SUBSYSTEM=="net", ATTR{address}=="52:54:00:aa:bb:cc", NAME="eth0"\n',
     [("persistent_rules", "*")]),
])
def test_network_parsers(path: str, text: str, kinds: list[tuple[str, str]]) -> None:
    assert [(i.kind, i.interface) for i in linux_config.network({path: text})] == kinds


def test_fstab_device_names() -> None:
    text = ("# /dev/sda1 in a comment\nUUID=1 / ext4 defaults 0 1\nLABEL=x /x ext4 defaults 0 0\n"
            "/dev/mapper/vg-root /r ext4 d 0 0\n/dev/disk/by-uuid/1 /b ext4 d 0 0\n/dev/sdb2 none swap sw 0 0\n"
            "/dev/nvme0n1p3 /n xfs d 0 0\n/dev/vda /v ext4 d 0 0\nproc /proc proc d 0 0\n")
    assert [e.device for e in linux_config.device_named(linux_config.fstab(text))] == [
        "/dev/sdb2", "/dev/nvme0n1p3", "/dev/vda"]


def test_initramfs_early_cpio_then_compressed() -> None:
    early = cpio.gzip_archive({"kernel/x86/microcode/GenuineIntel.bin": b"u" * 5})
    main = cpio.gzip_archive({"usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko": b"x"})
    raw_early = gzip.decompress(early)
    blob = raw_early + bytes(512) + main
    chunks = [blob[i:i + 7] for i in range(0, len(blob), 7)]  # any chunking
    assert cpio.names(chunks) == ["kernel/x86/microcode/GenuineIntel.bin",
                                  "usr/lib/modules/6.1/kernel/drivers/hv/hv_vmbus.ko"]


def test_initramfs_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(cpio.InitramfsError, match="does not read"):
        cpio.names([b"\x04\x22\x4d\x18" + bytes(100)])  # lz4 frames: not read, said so
    with pytest.raises(cpio.InitramfsError, match="damaged cpio header"):
        cpio.names([b"070701" + b"zz" * 60])
    bomb = gzip.compress(bytes(64 << 20))
    monkeypatch.setattr(cpio, "MAX_OUT", 8 << 20)
    with pytest.raises(cpio.InitramfsError, match="decompresses to more than"):
        cpio.names([bomb])
    with pytest.raises(cpio.InitramfsError, match="ends in the middle"):
        cpio.names([gzip.decompress(cpio.gzip_archive({"a": b"x" * 100}))[:150]])


class _Bytes(PointReader):
    def __init__(self, data: bytes) -> None:
        self.data, self.size = data, len(data)

    def read(self, offset: int, length: int) -> bytes:
        return self.data[offset:offset + length]


def test_nbd_export_is_read_only(tmp_path: Path) -> None:
    import nbd  # Debian's libnbd binding, linked into the venv by make

    from godwit.assess.nbd_server import PointServer

    data = os.urandom(3 << 20)
    with PointServer(_Bytes(data), tmp_path / "s") as srv:
        h = nbd.NBD()
        h.connect_unix(str(srv.path))
        assert h.get_size() == len(data) and h.is_read_only()
        assert h.pread(70000, 1 << 20) == data[1 << 20:(1 << 20) + 70000]
        with pytest.raises(nbd.Error, match=r"EPERM|not permitted|does not support"):
            h.pwrite(b"x" * 512, 0)
        with pytest.raises(nbd.Error):
            h.pread(4096, len(data) - 100)  # past the end
        h.shutdown()
    assert not (tmp_path / "s").exists()
