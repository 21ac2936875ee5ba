"""Mover jobs on procrastinate (godwit.movers), one behaviour each, on a real PostgreSQL."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.cycle import run_cycle
from godwit.engine.inventory import add_server
from godwit.errors import GodwitError, UsageError
from godwit.movers import queue
from godwit.movers.loop import QueueMover
from godwit.movers.worker import MoverWorker
from godwit.project.project import Project, init
from tests.helpers import make_raw, scribble

SIZE = 1 << 20


@pytest.fixture
def pg_project(tmp_path: Path, postgres_url: str) -> Iterator[Project]:
    p = init(tmp_path / "proj", state_url=postgres_url)
    yield p
    p.close()


def _jobs(project: Project) -> list[tuple[str, str | None, str | None]]:
    """(status, lock, queueing lock) of every apply job left in the queue."""
    app = queue.build_app(project)
    with app.open():
        return [(j.status or "", j.lock, j.queueing_lock)
                for j in app.job_manager.list_jobs(task=queue.APPLY)]


def _burst(project: Project) -> None:
    """One worker that stops once no job is left."""
    MoverWorker(project, queue.MoverSettings(name="t"), install_signal_handlers=False, wait=False).run()


def test_worker_refuses_sqlite(tmp_path: Path) -> None:
    init(tmp_path / "p").close()
    for cmd in ("worker", "schedule"):
        proc = subprocess.run([sys.executable, "-m", "godwit", "mover", cmd, "--project", str(tmp_path / "p")],
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 3, proc.stderr
        assert "needs the project's state on PostgreSQL" in proc.stderr
        assert "hint:" in proc.stderr and "godwit mover run" in proc.stderr
        assert "Traceback" not in proc.stderr
    with pytest.raises(UsageError, match="need PostgreSQL"):
        queue.build_app(init(tmp_path / "q"))


def test_a_job_for_a_server_with_nothing_committed_is_a_no_op(pg_project: Project, tmp_path: Path) -> None:
    add_server(pg_project, "s", [str(make_raw(tmp_path / "d.raw", SIZE))])
    proc = subprocess.run([sys.executable, "-m", "godwit", "--database-url", pg_project.db.sa_url.render_as_string(
        hide_password=False), "mover", "schedule", "s", "--json", "--project", str(pg_project.root)],
        capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"s": True}
    assert [j[0] for j in _jobs(pg_project)] == ["todo"]
    _burst(pg_project)
    assert _jobs(pg_project) == []  # succeeded (and removed): a failed job would stay
    server = pg_project.db.server("s")
    assert pg_project.db.recovery_points(server.id) == []
    assert not [e for e in pg_project.db.events("s") if "applied" in e.message]
    assert not list(pg_project.replicas_dir.iterdir())


def test_two_deferrals_for_one_server_are_coalesced(pg_project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", SIZE)
    add_server(pg_project, "s", [str(disk)])
    replication.start(pg_project, "s")
    assert queue.schedule(pg_project) == {"s": True}  # the due server: it has a committed cycle
    scribble(disk, seed=3)
    replication.cycle(pg_project, "s")
    assert queue.schedule(pg_project, ["s"]) == {"s": False}  # one already waits: coalesced
    uid = pg_project.db.server("s").uid
    assert _jobs(pg_project) == [("todo", uid, f"apply:{uid}")]
    _burst(pg_project)
    server = pg_project.db.server("s")
    assert [rp.number for rp in pg_project.db.recovery_points(server.id)] == [1, 2]
    applied = [e.message for e in pg_project.db.events("s") if " applied " in e.message]
    assert len(applied) == 1 and "cycles 1-2" in applied[0]  # one job applied both, in order
    assert next(pg_project.replicas_dir.glob("s-*/disk0-*.img")).read_bytes() == disk.read_bytes()
    assert queue.due_servers(pg_project) == []


def test_the_job_schema_is_created_once(pg_project: Project) -> None:
    assert queue.ensure_schema(pg_project) is True
    assert queue.ensure_schema(pg_project) is False


def test_a_stalled_job_is_superseded_by_the_one_already_queued(pg_project: Project, tmp_path: Path) -> None:
    """A dead worker's job while a newer job of its server waits: the old one ends, the newer applies."""
    import asyncio

    from procrastinate.jobs import Status
    from sqlalchemy import text

    disk = make_raw(tmp_path / "d.raw", SIZE)
    add_server(pg_project, "s", [str(disk)])
    replication.start(pg_project, "s")
    queue.ensure_schema(pg_project)
    settings = queue.MoverSettings(stalled_seconds=5)
    app = queue.build_app(pg_project, settings)

    async def scenario() -> tuple[int, int]:
        async with app.open_async():
            jm = app.job_manager
            server = pg_project.db.server("s")
            await queue._defer_async(app, server)
            dead = await jm.register_worker()
            old = await jm.fetch_job(queues=[queue.QUEUE], worker_id=dead)  # the "dead" worker took it
            assert old is not None and old.id is not None
            assert await queue._defer_async(app, server)  # a newer one waits behind it
            with pg_project.db.tx() as c:  # the worker fell silent an hour ago
                c.execute(text("UPDATE procrastinate_workers SET last_heartbeat = now() - interval '1 hour' "
                               "WHERE id = :w"), {"w": dead})
            assert await queue._take_over_stalled(app, pg_project, settings) == 1
            return old.id, len(list(await jm.get_stalled_jobs(queue=queue.QUEUE, seconds_since_heartbeat=5)))

    old_id, still_stalled = asyncio.run(scenario())
    assert still_stalled == 0
    with app.open():
        assert app.job_manager.get_job_status(old_id) == Status.FAILED
    assert any("superseded" in e.message for e in pg_project.db.events("s"))
    _burst(pg_project)
    assert [rp.number for rp in pg_project.db.recovery_points(pg_project.db.server("s").id)] == [1]


def _replicate_run(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    url = project.db.sa_url.render_as_string(hide_password=False)
    return subprocess.run([sys.executable, "-m", "godwit", "--database-url", url, "replicate", "run", "--once",
                           "--json", *args, "--project", str(project.root)],
                          capture_output=True, text=True, timeout=180, check=False)


def test_the_appliance_loop_on_postgresql_applies_through_the_queue(pg_project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", SIZE)
    add_server(pg_project, "s", [str(disk)])
    with pg_project.db.unit() as u:  # enabled, no cycle yet: the loop runs the initial
        u.servers.set_state(pg_project.db.server("s").id, "replicating")

    # --no-mover: the loop commits and defers the apply; a worker elsewhere does it.
    proc = _replicate_run(pg_project, "--no-mover")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [c["number"] for c in out["cycles"]] == [1] and out["applied"] == 0
    uid = pg_project.db.server("s").uid
    assert _jobs(pg_project) == [("todo", uid, f"apply:{uid}")]
    assert pg_project.db.recovery_points(pg_project.db.server("s").id) == []
    _burst(pg_project)
    assert [rp.number for rp in pg_project.db.recovery_points(pg_project.db.server("s").id)] == [1]

    # With its own worker (the default): applied by a job of the loop's worker before --once ends.
    scribble(disk, seed=6)
    proc = _replicate_run(pg_project)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [c["number"] for c in out["cycles"]] == [2] and out["applied"] == 1, out
    assert _jobs(pg_project) == []
    assert [rp.number for rp in pg_project.db.recovery_points(pg_project.db.server("s").id)] == [1, 2]
    applied = [e.message for e in pg_project.db.events("s") if " applied " in e.message]
    assert any("replicate-run" in m for m in applied), applied  # by the queue's worker, not in-process
    assert next(pg_project.replicas_dir.glob("s-*/disk0-*.img")).read_bytes() == disk.read_bytes()


@contextlib.contextmanager
def _jobs_table_gone(project: Project) -> Iterator[None]:
    """A real failure of PostgreSQL for the job queue only: its jobs table renamed away."""
    import psycopg

    with psycopg.connect(queue.conninfo(project.db), autocommit=True) as c:
        c.execute("ALTER TABLE procrastinate_jobs RENAME TO procrastinate_jobs_away")
        try:
            yield
        finally:
            c.execute("ALTER TABLE procrastinate_jobs_away RENAME TO procrastinate_jobs")


def test_a_failed_deferral_fails_the_apply_only_and_the_sweep_queues_it(pg_project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", SIZE)
    add_server(pg_project, "s", [str(disk)])
    pg_project.db.set_server_state(pg_project.db.server("s").id, "replicating")
    run_cycle(pg_project, "s")
    uid = pg_project.db.server("s").uid
    queue.ensure_schema(pg_project)
    app = queue.build_app(pg_project)
    with app.open():
        mover = QueueMover(pg_project, app)
        with _jobs_table_gone(pg_project):
            with pytest.raises(GodwitError, match="its cycle is committed, but the apply job could not be queued"):
                mover.after_commit("s")  # the loop reports it as the apply's error, not the cycle's
            missed = mover.sweep()
            assert list(missed) == ["s"] and isinstance(missed["s"], GodwitError)
        assert [c.number for c in pg_project.db.cycles(pg_project.db.server("s").id, ("committed",))] == [1]
        assert _jobs(pg_project) == []
        assert mover.sweep() == {}  # the queue is back: the sweep defers the missed job
    assert _jobs(pg_project) == [("todo", uid, f"apply:{uid}")]
    _burst(pg_project)
    assert [rp.number for rp in pg_project.db.recovery_points(pg_project.db.server("s").id)] == [1]
