"""Several live disks of one QEMU are frozen in ONE QMP transaction: the server's recovery point
is one instant across them. A real qemu-storage-daemon serves two qcow2 disks; a writer writes
marker k to disk 0, waits for it, then writes k to disk 1, over and over. At one instant disk 1
can never hold a marker that disk 0 lacks (the writer is at most between the two writes); two
freezes even a millisecond apart show it at once (checked against separate freezes below)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.sources.qmp import QmpSession
from godwit.trackers import BitmapTracker
from tests.qemu_daemon import QemuDaemon
from tests.unit.test_format_spec_reader import SpecReader

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")

MiB = 1 << 20
SIZE = 2 * MiB

WRITER = textwrap.dedent("""
    import struct, sys, nbd
    hs = []
    for name in ("disk0", "disk1"):
        h = nbd.NBD(); h.set_export_name(name); h.connect_unix(sys.argv[1]); hs.append(h)
    k = 0
    while True:
        k += 1
        for h in hs:  # disk 0 first, and only once it has it, disk 1
            h.pwrite(struct.pack("<Q", k) * 512, 0)
""")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[QemuDaemon]:
    d = QemuDaemon(tmp_path / "qsd", size=SIZE, fleece_dir=tmp_path / "fleece", disks=2).start()
    yield d
    d.kill()


def _wait_for_writes(daemon: QemuDaemon) -> None:
    h = daemon._handle(1)
    try:
        deadline = time.monotonic() + 20
        while struct.unpack("<Q", h.pread(8, 0))[0] < 100:
            assert time.monotonic() < deadline, "the writer does not write"
            time.sleep(0.02)
    finally:
        h.shutdown()


def _markers(project: Project, tmp_path: Path) -> tuple[int, int]:
    apply_server(project, "s")
    out = tmp_path / "out"
    files = migration.test_migration(project, "s", out_dir=out).files
    marks = []
    for f in files:
        with open(f, "rb") as fh:
            marks.append(struct.unpack("<Q", fh.read(8))[0])
    shutil.rmtree(out)
    return marks[0], marks[1]


def test_two_disks_of_one_qemu_are_one_instant(project: Project, daemon: QemuDaemon, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    transactions: list[list[str]] = []
    run = QmpSession.run

    def spied(self: QmpSession, command: str, **args: Any) -> Any:
        if command == "transaction" and any(a["type"] == "blockdev-backup" for a in args["actions"]):
            transactions.append([a["data"]["device"] for a in args["actions"] if a["type"] == "blockdev-backup"])
        return run(self, command, **args)

    run_all = QmpSession.run_all

    def spied_all(self: QmpSession, commands: list[tuple[str, dict[str, Any]]]) -> list[Any]:
        for command, args in commands:  # the freeze's transaction goes with the nodes and exports
            if command == "transaction" and any(a["type"] == "blockdev-backup" for a in args["actions"]):
                transactions.append([a["data"]["device"] for a in args["actions"]
                                     if a["type"] == "blockdev-backup"])
        return run_all(self, commands)

    monkeypatch.setattr(QmpSession, "run", spied)
    monkeypatch.setattr(QmpSession, "run_all", spied_all)
    add_server(project, "s", daemon.specs)
    project.db.set_server_state(project.db.server("s").id, "replicating")
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(daemon.nbd_sock)], stderr=subprocess.PIPE)
    _wait_for_writes(daemon)
    tracker = BitmapTracker()
    seen = []
    details = []
    uid = project.db.server("s").uid
    try:
        for n in range(1, 5):
            run_cycle(project, "s", tracker=tracker)
            doc = SpecReader(project.cache_dir).manifest(uid, n)  # before the mover applies it
            details.append((doc["consistency"], doc["consistency_detail"]))
            m0, m1 = _markers(project, tmp_path)
            seen.append((m0, m1))
            assert m1 <= m0 <= m1 + 1, seen  # never disk 1's marker without disk 0's: one instant
        assert writer.poll() is None, writer.stderr.read().decode() if writer.stderr else ""
    finally:
        writer.kill()
        writer.wait()
    assert seen[-1][0] > seen[0][0] > 0, seen  # the writer wrote throughout
    assert transactions == [["disk0", "disk1"]] * 4  # one transaction per cycle, both disks
    assert details == [("crash", "crash-consistent (fleecing); all disks at one instant (one transaction)")] * 4
    # Both disks' bitmaps moved on together, and nothing is left in QEMU.
    assert [n for n in daemon.bitmaps(0) if n.startswith("godwit-")] == ["godwit-c4"]
    assert [n for n in daemon.bitmaps(1) if n.startswith("godwit-")] == ["godwit-c4"]
    assert not [e for e in daemon.qmp("query-block-exports") if e["id"].startswith("godwit-")]


def test_disks_of_two_qemus_are_frozen_one_after_the_other(project: Project, tmp_path: Path) -> None:
    a = QemuDaemon(tmp_path / "a", size=SIZE, fleece_dir=tmp_path / "fa").start()
    b = QemuDaemon(tmp_path / "b", size=SIZE, fleece_dir=tmp_path / "fb", nbd_server=False).start()
    try:
        add_server(project, "s", [a.spec, b.spec])
        project.db.set_server_state(project.db.server("s").id, "replicating")
        run_cycle(project, "s", tracker=BitmapTracker())
        doc = SpecReader(project.cache_dir).manifest(project.db.server("s").uid, 1)
        assert doc["consistency"] == "crash"
        assert str(doc["consistency_detail"]).endswith("; disks 0 | 1 frozen one group after the other, "
                                                       "not at one instant")
    finally:
        a.kill()
        b.kill()
