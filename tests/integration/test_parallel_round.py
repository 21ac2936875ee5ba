"""Parallel cycles in `godwit replicate run` (issue 13.1): several servers, raw and qcow2, initials
and deltas in one round, a ``kill -9`` while several cycles are open at once, then a rerun: every
replica is bit-exact with its source."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.project.project import Project, open_project
from tests.helpers import convert, make_raw, read_view, scribble

pytestmark = pytest.mark.slow


def _open_cycles(project: Project) -> int:
    con = sqlite3.connect(f"file:{project.state_dir / 'godwit.db'}?mode=ro", uri=True, timeout=10)
    try:
        return int(con.execute("select count(*) from cycles where state = 'open'").fetchone()[0])
    except sqlite3.OperationalError:
        return 0
    finally:
        con.close()


def test_kill_during_a_parallel_round_then_rerun_is_bit_exact(project: Project, tmp_path: Path) -> None:
    cfg = project.root / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("pack_size_mib = 32", "pack_size_mib = 1")
                   .replace("interval_seconds = 300", "interval_seconds = 300\nparallel_disks = 3"))
    p = open_project(project.root)
    disks: dict[str, list[tuple[Path, str]]] = {}
    for i in range(6):
        fmt = "qcow2" if i % 2 else "raw"
        imgs = []
        for d in range(2 if i == 1 else 1):  # one server with two disks: it counts two slots
            raw = make_raw(tmp_path / f"s{i}d{d}.raw", 6 << 20, seed=10 * i + d, writes=8, max_len=1 << 20)
            imgs.append((convert(raw, tmp_path / f"s{i}d{d}.qcow2", "qcow2") if fmt == "qcow2" else raw, fmt))
        disks[f"s{i}"] = imgs
        add_server(p, f"s{i}", [str(img) for img, _ in imgs])
    for name in ("s0", "s1", "s2", "s3"):  # these have a committed initial: their next cycle is a delta
        replication.start(p, name)
    for name in ("s4", "s5"):  # enabled, initial not yet run (as after a `start` that died early)
        p.db.set_server_state(p.db.server(name).id, "replicating")
    for n, imgs in enumerate(disks.values()):
        for img, fmt in imgs:
            scribble(img, seed=100 + n, writes=6, max_len=400_000, fmt=fmt)

    proc = subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "run", "--max-mbps", "16", "--json",
                             "--project", str(p.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    most = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and most < 2:
        most = max(most, _open_cycles(p))
        time.sleep(0.02)
    time.sleep(0.3)  # let the parallel cycles journal some packs
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert most >= 2, "the cycles did not run in parallel"
    assert _open_cycles(p) >= 1, "the kill came after the round: it proves nothing"

    done = subprocess.run([sys.executable, "-m", "godwit", "replicate", "run", "--once", "--json",
                           "--project", str(p.root)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert sorted(c["server"] for c in out["cycles"]) == sorted(disks)
    assert any(c["resumed"] for c in out["cycles"])
    assert _open_cycles(p) == 0
    for name, imgs in disks.items():
        server = p.db.server(name)
        assert not p.db.cycles(server.id, ("committed",)), f"{name}: not all applied"
        for idx, (img, fmt) in enumerate(imgs):
            replica = next(p.replicas_dir.glob(f"{name}-*/disk{idx}-*.img"))
            assert replica.read_bytes() == read_view(img, fmt), f"{name} disk {idx} differs from its source"
    status = {s.server: s for s in replication.status(p)}
    assert all(s.schedule is None for s in status.values())  # no loop runs now: no stale schedule
    p.close()


def test_status_shows_the_running_loops_schedule(project: Project, tmp_path: Path) -> None:
    """While `replicate run` runs, status names each server's place (here: one server in backoff)."""
    good = make_raw(tmp_path / "good.raw", 2 << 20, seed=1)
    bad = make_raw(tmp_path / "bad.raw", 2 << 20, seed=2)
    add_server(project, "good", [str(good)])
    add_server(project, "bad", [str(bad)])
    replication.start(project, "good")
    replication.start(project, "bad")
    bad.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "run", "--interval", "60",
                             "--project", str(project.root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 60
        rows: dict[str, str | None] = {}
        while time.monotonic() < deadline:
            rows = {s.server: s.schedule for s in replication.status(project)}
            if (rows.get("bad") or "").startswith("backing off") and (rows.get("good") or "").startswith("idle"):
                break
            time.sleep(0.1)
        assert (rows["bad"] or "").startswith("backing off after error until"), rows
        assert (rows["good"] or "").startswith("idle: next cycle due at"), rows
        shown = subprocess.run([sys.executable, "-m", "godwit", "replicate", "status", "--project",
                                str(project.root)], capture_output=True, text=True, timeout=60)
        assert "bad schedule: backing off after error until" in shown.stdout, shown.stdout
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode != 0  # bad's error is reported in the exit code
    assert all(s.schedule is None for s in replication.status(project))


def test_a_qcow2_source_lets_go_of_the_read_buffer(tmp_path: Path) -> None:
    """libnbd 1.14's aio_pread kept every caller buffer alive: 20 MiB leaked per qcow2 cycle, which
    bench/appliance.py's 200-disk loop turned into gigabytes. An mmap with a live export cannot be
    closed, so closing it proves the source kept no view of it."""
    import mmap

    from godwit.sources import open_source

    img = convert(make_raw(tmp_path / "d.raw", 8 << 20, seed=4, writes=6), tmp_path / "d.qcow2", "qcow2")
    src = open_source(img, "qcow2", snapshot_dir=None)
    try:
        for off in range(0, 8 << 20, 4 << 20):
            buf = mmap.mmap(-1, 4 << 20)
            view = memoryview(buf)
            src.read_into(off, view)
            assert bytes(view[:4096]) == read_view(img, "qcow2")[off:off + 4096]
            view.release()
            buf.close()  # BufferError if the source still holds an export of it
    finally:
        src.close()


def _both_running(board: Path) -> bool:
    try:
        doc = json.loads(board.read_text())
    except (OSError, ValueError):
        return False
    return sum(v["state"] == "running" for v in doc["servers"].values()) == 2


def test_first_ctrl_c_lets_cycles_finish_second_stops_now(project: Project, tmp_path: Path) -> None:
    for i in range(2):
        add_server(project, f"s{i}", [str(make_raw(tmp_path / f"d{i}.raw", 8 << 20, seed=20 + i, writes=12,
                                                   max_len=1 << 20))])
        project.db.set_server_state(project.db.server(f"s{i}").id, "replicating")
    argv = [sys.executable, "-m", "godwit", "replicate", "run", "--max-mbps", "4", "--project", str(project.root)]

    def started() -> subprocess.Popen[str]:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while _open_cycles(project) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _open_cycles(project) == 2
        return proc

    proc = started()
    proc.send_signal(signal.SIGINT)
    time.sleep(1.0)
    assert proc.poll() is None, "the first Ctrl-C must let the running cycles finish"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert _open_cycles(project) == 2  # interrupted, to be resumed

    proc = subprocess.Popen([*argv[:-4], "--project", str(project.root)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    board = project.state_dir / "schedule.json"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _both_running(board):
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)  # once: both resumed cycles run to their commit, then it exits
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert _open_cycles(project) == 0
    for i in range(2):
        assert [c.number for c in project.db.cycles(project.db.server(f"s{i}").id, ("committed", "applied"))] == [1]
