"""Scale-out acceptance: 3 `godwit mover worker` processes on one PostgreSQL apply 20 disks
(10 servers x 2), one worker is killed with SIGKILL mid-apply, and still every replica ends
bit-exact, every cycle is applied once and in order, and the dead worker's server is taken over.

Mid-apply is made deterministic by the test-only hook GODWIT_TEST_APPLY_PAUSE: each worker's
first write of its first job touches a file named <server>.<pid> and sleeps, and the test kills
the first worker that touched one.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.movers.queue import TEST_PAUSE_ENV
from godwit.project.project import init
from tests.helpers import make_raw, scribble

pytestmark = pytest.mark.slow

SERVERS, DISKS, CYCLES = 10, 2, 3
SIZE = 2 << 20


def _wait(what: str, until: float, check: Callable[[], bool]) -> None:
    while time.monotonic() < until:
        if check():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def test_three_workers_one_killed_mid_apply(tmp_path: Path, postgres_url: str) -> None:
    project = init(tmp_path / "proj", state_url=postgres_url)
    sources: dict[str, list[Path]] = {}
    for i in range(SERVERS):
        name = f"s{i}"
        sources[name] = [make_raw(tmp_path / f"{name}-{d}.raw", SIZE + d * 4096, seed=i * 10 + d, writes=8)
                         for d in range(DISKS)]
        add_server(project, name, [str(p) for p in sources[name]])
        replication.start(project, name)  # cycle 1
        for c in range(2, CYCLES + 1):
            scribble(sources[name][c % DISKS], seed=100 * i + c, writes=4)
            replication.cycle(project, name)
    pauses = tmp_path / "pauses"
    pauses.mkdir()
    env = {**os.environ, "GODWIT_DATABASE_URL": postgres_url, TEST_PAUSE_ENV: f"2:{pauses}"}
    workers = [subprocess.Popen([sys.executable, "-m", "godwit", "mover", "worker", "--project", str(project.root),
                                 "--name", f"w{k}", "--heartbeat", "0.5", "--stalled-after", "3",
                                 "--sweep-interval", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for k in range(3)]
    try:
        deadline = time.monotonic() + 60
        _wait("a worker to start applying", deadline, lambda: any(pauses.iterdir()))
        first = sorted(pauses.iterdir(), key=lambda f: f.stat().st_mtime)[0]
        victim_server, victim_pid = first.name.rsplit(".", 1)
        victim = next(w for w in workers if w.pid == int(victim_pid))
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)

        def all_applied() -> bool:
            return all(len(project.db.cycles(s.id, ("applied",))) == CYCLES for s in project.db.servers())

        _wait("every cycle to be applied", deadline, all_applied)
        for w in workers:
            if w is not victim:
                w.send_signal(signal.SIGTERM)
        for w in workers:
            if w is not victim:
                _, stderr = w.communicate(timeout=30)
                assert w.returncode == 0, stderr  # graceful stop
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    for s in project.db.servers():
        # Bit-exact with the source at the last cycle.
        for d in project.db.disks(s.id):
            replica = next(project.replicas_dir.glob(f"{s.name}-{s.uid}/disk{d.idx}-{d.uid}.img"))
            assert replica.read_bytes() == sources[s.name][d.idx].read_bytes(), f"{s.name} disk {d.idx}"
        # Once each, in order: points 1..N sealed in increasing time, one "sealed" event per point.
        points = project.db.recovery_points(s.id, live_only=False)
        assert [p.number for p in points] == list(range(1, CYCLES + 1)), s.name
        assert all(a.sealed < b.sealed for a, b in itertools.pairwise(points)), s.name
        events = sorted(project.db.events(s.name, limit=200), key=lambda e: e.id)  # oldest first
        sealed = [e.cycle for e in events if e.message.endswith(" sealed") and e.message.startswith("recovery point")]
        assert sealed == list(range(1, CYCLES + 1)), (s.name, sealed)
        applied = [c.applied or 0.0 for c in project.db.cycles(s.id, ("applied",))]
        assert applied == sorted(applied), s.name

    # The killed worker's server was taken over: its stalled job handed on, then applied by another.
    events = sorted(project.db.events(victim_server, limit=200), key=lambda e: e.id)
    taken = [i for i, e in enumerate(events) if "taken over" in e.message]
    assert taken, [e.message for e in events]
    after = [e.message for e in events[taken[0]:] if " applied " in e.message]
    assert after and all(f"(pid {victim_pid} " not in m for m in after), after
    assert not any(f"(pid {victim_pid} " in e.message for e in events if " applied " in e.message)
    project.close()
