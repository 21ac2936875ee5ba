"""Guest-agent freeze around the fleecing transaction (``&qga=``), against a real
qemu-storage-daemon and the TEST DOUBLE ``tests/fake_guest_agent.py`` (a real qemu-ga's fsfreeze
would freeze this host; no guest VM is booted here): the freeze holds exactly while the QMP
transaction runs, the cycle is recorded ``fs`` (filesystem-consistent), and an agent that is
missing, hangs, or holds too long is thawed and the cycle falls back to ``crash``."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from godwit.engine.cycle import commit, run_cycle
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import UsageError
from godwit.format.keys import manifest_key
from godwit.format.manifest import decode
from godwit.project.project import Project
from godwit.sources.live_spec import LiveSpec
from godwit.sources.qmp import QmpSession
from godwit.trackers import BitmapTracker
from tests.fake_guest_agent import FakeGuestAgent
from tests.qemu_daemon import QemuDaemon
from tests.unit.test_format_spec_reader import SpecReader

pytestmark = pytest.mark.skipif(shutil.which("qemu-storage-daemon") is None, reason="needs qemu-system-common")

MiB = 1 << 20


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[QemuDaemon]:
    d = QemuDaemon(tmp_path / "qsd", size=4 * MiB, fleece_dir=tmp_path / "fleece")
    d.qga = tmp_path / "qga.sock"
    d.start()
    d.write(0, b"x" * MiB)
    d.close_guest()
    yield d
    d.kill()


@pytest.fixture
def agent(daemon: QemuDaemon) -> Iterator[FakeGuestAgent]:
    assert daemon.qga is not None
    a = FakeGuestAgent(daemon.qga)
    yield a
    a.close()


@pytest.fixture
def transactions(monkeypatch: pytest.MonkeyPatch, agent: FakeGuestAgent) -> list[bool]:
    """For each freeze transaction godwit ran: whether the guest was frozen at that moment."""
    seen: list[bool] = []
    run = QmpSession.run

    def spied(self: QmpSession, command: str, **args: Any) -> Any:
        if command == "transaction" and any(a["type"] == "blockdev-backup" for a in args["actions"]):
            seen.append(agent.frozen)
        return run(self, command, **args)

    monkeypatch.setattr(QmpSession, "run", spied)
    return seen


def _setup(project: Project, spec: str) -> None:
    add_server(project, "s", [spec])
    project.db.set_server_state(project.db.server("s").id, "replicating")


def _manifest_doc(project: Project, number: int) -> dict[str, object]:
    """The manifest as the independent reader of docs/format.md sees it."""
    server = project.db.server("s")
    return SpecReader(project.cache_dir).manifest(server.uid, number)


def _events(project: Project) -> list[str]:
    return [e.message for e in project.db.events(server="s")]


def test_the_guest_is_frozen_around_the_transaction_and_the_cycle_is_fs(
        project: Project, daemon: QemuDaemon, agent: FakeGuestAgent, transactions: list[bool],
        tmp_path: Path) -> None:
    _setup(project, daemon.spec)
    tracker = BitmapTracker()
    res = run_cycle(project, "s", tracker=tracker)
    assert res.consistency == "fs"
    assert transactions == [True]  # the transaction ran while the filesystems were frozen
    assert agent.names() == ["guest-sync", "guest-fsfreeze-status", "guest-fsfreeze-freeze", "guest-fsfreeze-thaw"]
    assert not agent.frozen
    # Held for the transaction only, not for the reads.
    (_, t_freeze), (_, t_thaw) = agent.calls[2], agent.calls[3]
    assert t_thaw - t_freeze < 2.0
    doc = _manifest_doc(project, 1)
    assert doc["format"] == 2 and doc["consistency"] == "fs"
    assert doc["consistency_detail"] == "filesystem-consistent (guest agent fsfreeze, fleecing)"
    daemon.write(2 * MiB, b"y" * 4096)
    daemon.close_guest()
    run_cycle(project, "s", tracker=tracker)
    apply_server(project, "s")
    [point] = [p for p in project.db.recovery_points(project.db.server("s").id) if p.number == 2]
    assert point.consistency == "fs"


def test_a_hanging_agent_is_thawed_and_the_cycle_is_crash_consistent(
        project: Project, daemon: QemuDaemon, agent: FakeGuestAgent, transactions: list[bool]) -> None:
    agent.hang_freeze = 2.0
    _setup(project, daemon.spec + "&qga_timeout=0.5")
    t0 = time.monotonic()
    res = run_cycle(project, "s", tracker=BitmapTracker())
    assert time.monotonic() - t0 < 10
    assert res.consistency == "crash"
    assert any("could not freeze" in m and "no answer within" in m for m in _events(project))
    doc = _manifest_doc(project, 1)
    assert doc["format"] == 1 and doc["consistency"] == "crash"
    assert doc["consistency_detail"] == "crash-consistent (fleecing)"
    deadline = time.monotonic() + 10  # the thaw queued behind the slow freeze reaches the guest
    while agent.frozen or "guest-fsfreeze-thaw" not in agent.names():
        assert time.monotonic() < deadline, agent.names()
        time.sleep(0.05)


def test_a_freeze_held_too_long_is_thawed_by_the_watchdog(
        project: Project, daemon: QemuDaemon, agent: FakeGuestAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    run = QmpSession.run
    thawed_during: list[bool] = []

    def slow(self: QmpSession, command: str, **args: Any) -> Any:
        if command == "transaction" and any(a["type"] == "blockdev-backup" for a in args["actions"]):
            time.sleep(1.0)  # QEMU slow to answer: longer than qga_timeout
            thawed_during.append(not agent.frozen)
        return run(self, command, **args)

    monkeypatch.setattr(QmpSession, "run", slow)
    _setup(project, daemon.spec + "&qga_timeout=0.3")
    res = run_cycle(project, "s", tracker=BitmapTracker())
    assert thawed_during == [True]  # the watchdog thawed while the transaction was still running
    assert res.consistency == "crash"
    assert any("thawed by the watchdog" in m for m in _events(project))
    assert agent.names().count("guest-fsfreeze-thaw") == 1 and not agent.frozen


def test_an_interrupted_transaction_still_thaws(
        project: Project, daemon: QemuDaemon, agent: FakeGuestAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    run = QmpSession.run

    def interrupted(self: QmpSession, command: str, **args: Any) -> Any:
        if command == "transaction" and any(a["type"] == "blockdev-backup" for a in args["actions"]):
            raise KeyboardInterrupt
        return run(self, command, **args)

    _setup(project, daemon.spec)
    with monkeypatch.context() as m:
        m.setattr(QmpSession, "run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            run_cycle(project, "s", tracker=BitmapTracker())
    assert agent.names()[-1] == "guest-fsfreeze-thaw" and not agent.frozen
    # Nothing is left in QEMU, and the next cycle is filesystem-consistent again.
    assert run_cycle(project, "s", tracker=BitmapTracker()).consistency == "fs"


def test_a_missing_agent_or_one_left_frozen(project: Project, daemon: QemuDaemon, tmp_path: Path) -> None:
    _setup(project, daemon.spec)  # no agent listens on the socket
    res = run_cycle(project, "s", tracker=BitmapTracker())
    assert res.consistency == "crash"
    assert any("could not freeze" in m for m in _events(project))
    assert daemon.qga is not None
    left = FakeGuestAgent(daemon.qga, frozen=True)  # a godwit was killed while it held the freeze
    try:
        daemon.write(0, b"z" * 4096)
        daemon.close_guest()
        assert run_cycle(project, "s", tracker=BitmapTracker()).consistency == "fs"
        assert left.names()[:4] == ["guest-sync", "guest-fsfreeze-status", "guest-fsfreeze-thaw",
                                    "guest-fsfreeze-freeze"]
        assert any("still frozen" in m for m in _events(project)) and not left.frozen
    finally:
        left.close()


def test_the_qga_parameters_are_checked() -> None:
    spec = LiveSpec.parse("qemu+unix:///run/q.sock?node=d&qga=/run/qga.sock&qga_timeout=2.5")
    assert spec.qga == Path("/run/qga.sock") and spec.qga_timeout == 2.5
    assert LiveSpec.parse(str(spec)) == spec
    for bad in ("&qga_timeout=3", "&qga=/q&qga_timeout=0", "&qga=/q&qga_timeout=x", "&qga=rel.sock"):
        with pytest.raises(UsageError):
            LiveSpec.parse("qemu+unix:///run/q.sock?node=d" + bad)


def test_old_manifests_still_read(project: Project, daemon: QemuDaemon) -> None:
    """A cycle without an agent is written as format 1: a godwit that reads only 1 reads it."""
    add_server(project, "s", [daemon.spec.replace(f"&qga={daemon.qga}", "")])
    project.db.set_server_state(project.db.server("s").id, "replicating")
    run_cycle(project, "s", tracker=BitmapTracker())
    server = project.db.server("s")
    data = project.store.get(manifest_key(server.uid, 1))
    assert data[4] == 1 and decode(data).consistency == "crash"
    assert commit.stored_manifest(project.store, server, project.db.cycle(server.id, 1)) is not None


def test_interrupted_while_freezing_still_thaws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from godwit.sources.qga import GuestAgent, frozen_guest

    agent = FakeGuestAgent(tmp_path / "qga.sock")
    execute = GuestAgent.execute

    def interrupted(self: GuestAgent, command: str, timeout: float | None = None, **args: Any) -> Any:
        said = execute(self, command, timeout, **args)
        if command == "guest-fsfreeze-freeze":
            raise KeyboardInterrupt  # Ctrl-C right after the guest froze, before the body ran
        return said

    monkeypatch.setattr(GuestAgent, "execute", interrupted)
    try:
        with pytest.raises(KeyboardInterrupt), frozen_guest(agent.path, timeout=2, warnings=[], what="t"):
            pytest.fail("the body must not run")
        assert agent.names()[-2:] == ["guest-fsfreeze-freeze", "guest-fsfreeze-thaw"] and not agent.frozen
    finally:
        agent.close()
