"""Issue 8.3: a disk's format is recorded once at `server add` and never probed again.

A guest controls its disk's first sector: a raw disk can claim to be a qcow2 image whose backing
file is a host file, or a VMDK descriptor whose extent is one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.project.project import Project
from godwit.sources import open_source

MiB = 1 << 20
SECRET = b"host secret, never to be replicated\n" * 1000


def _godwit(*args: str, project: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(project)],
                          capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def host_file(tmp_path: Path) -> Path:
    host = tmp_path / "host" / "file"
    host.parent.mkdir()
    host.write_bytes(SECRET + bytes(MiB - len(SECRET)))
    return host


@pytest.fixture
def guest(tmp_path: Path, host_file: Path) -> Path:
    """Exactly the issue's repro: a raw disk whose first sector is a qcow2 header."""
    vm = tmp_path / "vm"
    vm.mkdir()
    img = vm / "guest.img"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(host_file), str(img), "1M"],
                   check=True, capture_output=True)
    os.truncate(img, 16 * MiB)
    return img


def test_declared_raw_reads_the_raw_bytes_end_to_end(project: Project, guest: Path, tmp_path: Path) -> None:
    root = project.root
    add = _godwit("server", "add", "vm", "--disk", str(guest), "--disk-format", "raw", "--json", project=root)
    assert add.returncode == 0, add.stderr
    disk = json.loads(add.stdout)["disks"][0]
    assert (disk["format"], disk["size"]) == ("raw", 16 * MiB)
    for args in (["replicate", "start", "vm"], ["replicate", "cycle", "vm"], ["mover", "run", "--once"],
                 ["migrate", "vm", "--test", "--out", str(tmp_path / "out")]):
        proc = _godwit(*args, project=root)
        assert proc.returncode == 0, (args, proc.stderr)
    migrated = (tmp_path / "out" / "vm-disk0.raw").read_bytes()
    assert migrated == guest.read_bytes()  # the qcow2 header as bytes, 16 MiB of them
    assert migrated.startswith(b"QFI\xfb")
    assert SECRET[:40] not in migrated


def test_probed_image_with_backing_outside_its_folder_is_refused(project: Project, guest: Path) -> None:
    proc = _godwit("server", "add", "vm", "--disk", str(guest), project=project.root)
    assert proc.returncode == 10, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "outside the disk's folder" in proc.stderr
    assert "--disk-format raw" in proc.stderr  # the hint says what to do
    assert _godwit("server", "list", "--json", project=project.root).stdout.strip() == "[]"


def test_vmdk_descriptor_with_a_host_extent_is_refused(project: Project, tmp_path: Path, host_file: Path) -> None:
    vm = tmp_path / "vm2"
    vm.mkdir()
    img = vm / "disk.img"
    img.write_bytes(b'# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                    b'createType="monolithicFlat"\nRW 2048 FLAT "' + str(host_file).encode() + b'" 0\n')
    os.truncate(img, 4 * MiB)
    proc = _godwit("server", "add", "vm", "--disk", str(img), project=project.root)
    assert proc.returncode == 10, proc.stderr
    assert "extent" in proc.stderr and "outside the disk's folder" in proc.stderr
    ok = _godwit("server", "add", "vm", "--disk", str(img), "--disk-format", "raw", "--json", project=project.root)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["disks"][0]["format"] == "raw"


def test_backing_file_in_the_folder_is_followed_with_a_warning(project: Project, tmp_path: Path) -> None:
    vm = tmp_path / "vm3"
    vm.mkdir()
    base = vm / "base.raw"
    base.write_bytes(b"\x5a" * MiB)
    top = vm / "top.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw", "-b", "base.raw", str(top), "1M"],
                   check=True, capture_output=True, cwd=vm)
    proc = _godwit("server", "add", "vm", "--disk", str(top), "--json", project=project.root)
    assert proc.returncode == 0, proc.stderr
    assert "backing file" in proc.stderr and str(base) in proc.stderr
    disk = json.loads(proc.stdout)["disks"][0]
    assert disk["format"] == "qcow2"
    with open_source(Path(disk["spec"]), disk["format"]) as src:
        buf = bytearray(src.size)
        src.read_into(0, memoryview(buf))
    assert bytes(buf) == base.read_bytes()


def test_declared_qcow2_follows_the_backing_file_and_says_so(project: Project, guest: Path) -> None:
    proc = _godwit("server", "add", "vm", "--disk", str(guest), "--disk-format", "qcow2", "--json",
                   project=project.root)
    assert proc.returncode == 0, proc.stderr
    assert "backing file" in proc.stderr and "as --disk-format said" in proc.stderr


def test_disk_format_one_for_all_or_one_per_disk(project: Project, tmp_path: Path) -> None:
    disks = []
    for i in range(3):
        d = tmp_path / f"d{i}.img"
        d.write_bytes(os.urandom(MiB))
        disks.append(d)
    raw_q = tmp_path / "q.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(disks[0]), str(raw_q)], check=True)
    args = [a for d in disks[:2] for a in ("--disk", str(d))]
    bad = _godwit("server", "add", "a", *args, "--disk", str(raw_q), "--disk-format", "raw", "--disk-format", "raw",
                  project=project.root)
    assert bad.returncode == 2 and "2 --disk-format for 3 --disk" in bad.stderr, bad.stderr
    unknown = _godwit("server", "add", "a", *args, "--disk-format", "qed", project=project.root)
    assert unknown.returncode == 2 and "unknown disk format 'qed'" in unknown.stderr, unknown.stderr
    per_disk = _godwit("server", "add", "a", *args, "--disk", str(raw_q), "--disk-format", "raw",
                       "--disk-format", "raw", "--disk-format", "qcow2", "--json", project=project.root)
    assert per_disk.returncode == 0, per_disk.stderr
    assert [d["format"] for d in json.loads(per_disk.stdout)["disks"]] == ["raw", "raw", "qcow2"]
    for_all = _godwit("server", "add", "b", *args, "--disk-format", "raw", "--json", project=project.root)
    assert [d["format"] for d in json.loads(for_all.stdout)["disks"]] == ["raw", "raw"]
    wrong = _godwit("server", "add", "c", "--disk", str(disks[2]), "--disk-format", "qcow2", project=project.root)
    assert wrong.returncode == 10 and "cannot be read as qcow2" in wrong.stderr, wrong.stderr


def test_after_add_qemu_is_never_left_to_probe(project: Project, tmp_path: Path) -> None:
    """Every qemu-img / qemu-nbd run after `server add` names the format (-f or driver=)."""
    wrap = tmp_path / "bin"
    wrap.mkdir()
    log = tmp_path / "qemu.log"
    for tool in ("qemu-img", "qemu-nbd"):
        real = subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True, text=True).stdout.strip()
        script = wrap / tool
        script.write_text(f'#!/bin/sh\nprintf "%s\\n" "{tool} $*" >> {log}\nexec {real} "$@"\n')
        script.chmod(0o755)
    img = tmp_path / "vm" / "d.qcow2"
    img.parent.mkdir()
    raw = tmp_path / "d.raw"
    raw.write_bytes(os.urandom(2 * MiB))
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(img)], check=True)
    env = {**os.environ, "PATH": f"{wrap}:{os.environ['PATH']}"}
    root = project.root
    assert _godwit("server", "add", "vm", "--disk", str(img), project=root, env=env).returncode == 0
    log.write_text("")  # probing at add is allowed; from here on, never
    for args in (["replicate", "start", "vm"], ["replicate", "cycle", "vm"], ["replicate", "cycle", "vm"]):
        proc = _godwit(*args, project=root, env=env)
        assert proc.returncode == 0, (args, proc.stderr)
    runs = [line for line in log.read_text().splitlines() if line.strip()]
    assert any(r.startswith("qemu-nbd") for r in runs) and any(r.startswith("qemu-img snapshot") for r in runs)
    for r in runs:
        assert " -f " in f"{r} " or "driver=qcow2" in r, r
