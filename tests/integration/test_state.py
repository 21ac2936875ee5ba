"""The state repository on both databases: units of work, upgrades under a lock, lock holders named,
typed status, and rows that vanish under a command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server, remove_server
from godwit.errors import ConflictError
from godwit.project.project import Project
from godwit.state import StateDB
from godwit.state import schema as t
from godwit.state.locks import holder
from godwit.state.servers import NewDisk
from godwit.state.views import ServerStatus
from tests.helpers import make_raw

pytestmark = pytest.mark.both_databases

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db_url(state_url: str | None, tmp_path: Path) -> str:
    return state_url or f"sqlite:///{tmp_path / 'state.db'}"


def test_the_parameter_picks_the_database(project: Project, state_url: str | None) -> None:
    assert project.db.backend == ("postgresql" if state_url else "sqlite")


def test_a_unit_of_work_is_all_or_nothing(project: Project) -> None:
    with project.db.unit() as u:
        s = u.servers.add("a", [NewDisk("/d0", "raw", 1 << 20), NewDisk("/d1", "raw", 2 << 20)])
    with pytest.raises(RuntimeError), project.db.unit() as u:
        u.points.record(s.id, 1, sealed=time.time(), consistency="crash", disk_sizes=[1, 2])
        u.events.add("info", "sealed", server="a")
        raise RuntimeError("dies between the two writes")
    assert project.db.recovery_points(s.id) == []
    assert [e.message for e in project.db.events()] == []
    assert [d.idx for d in project.db.disks(s.id)] == [0, 1]
    with pytest.raises(ConflictError, match="already exists"), project.db.unit() as u:
        u.servers.add("a", [NewDisk("/x", "raw", 1)])


def test_a_vanished_row_is_a_conflict_not_an_integrity_error(project: Project) -> None:
    """What a cycle meets when its server is removed under it: a one-line ConflictError."""
    with pytest.raises(ConflictError, match="state changed under this command"), project.db.tx() as c:
        c.execute(t.journal.insert().values(cycle_id=424242, pack_id="p", size=1, payload=b"x"))


_OPENER = textwrap.dedent("""
    import sys
    from godwit.state import StateDB
    StateDB(sys.argv[1]).close()
""")


def test_concurrent_first_opens_upgrade_once(db_url: str) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", _OPENER, db_url], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(4)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, errors
    db = StateDB(db_url)
    try:
        with db.tx() as c:
            assert c.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        db.close()


_SQLITE_HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    c = sqlite3.connect(sys.argv[1], isolation_level=None)
    c.execute("BEGIN EXCLUSIVE")
    print("held", flush=True)
    time.sleep(60)
""")


def test_a_long_lock_names_its_holder(db_url: str, state_url: str | None) -> None:
    StateDB(db_url).close()
    if state_url is None:
        path = db_url.removeprefix("sqlite:///")
        proc = subprocess.Popen([sys.executable, "-c", _SQLITE_HOLDER, path], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            db = StateDB(db_url, busy_timeout=1)
            with pytest.raises(ConflictError) as exc:
                db.event("info", "blocked")
            db.close()
        finally:
            proc.kill()
            proc.wait()
        assert f"pid {proc.pid}" in exc.value.message and "stayed locked for more than 1s" in exc.value.message
    else:
        import psycopg

        conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, application_name="the-lock-holder") as other:
            other.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")  # held until rollback
            db = StateDB(db_url, busy_timeout=1)
            with pytest.raises(ConflictError) as exc:
                db.event("info", "blocked")
            db.close()
            other.rollback()
        assert "the-lock-holder" in exc.value.message and "since" in exc.value.message
    assert exc.value.hint and "wait" in exc.value.hint


_UPGRADE_HOLDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from godwit.state.locks import file_lock
    with file_lock(Path(sys.argv[1]), "a test's upgrade"):
        print("held", flush=True)
        time.sleep(60)
""")


def test_an_upgrade_waits_for_another_then_names_it(db_url: str, state_url: str | None) -> None:
    if state_url is None:
        lock = db_url.removeprefix("sqlite:///") + ".upgrade-lock"
        proc = subprocess.Popen([sys.executable, "-c", _UPGRADE_HOLDER, lock], cwd=ROOT, stdout=subprocess.PIPE,
                                text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
            with pytest.raises(ConflictError, match=rf"schema upgrade .* \(pid {proc.pid} \("):
                StateDB(db_url, busy_timeout=1)
        finally:
            proc.kill()
            proc.wait()
    else:
        import psycopg

        from godwit.state.upgrade import PG_UPGRADE_LOCK

        conninfo = db_url.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, application_name="another-upgrade") as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (PG_UPGRADE_LOCK,))
            with pytest.raises(ConflictError, match="another-upgrade"):
                StateDB(db_url, busy_timeout=1)
            other.rollback()
    StateDB(db_url).close()  # once the other lets go, the upgrade runs


def test_status_is_typed_and_its_json_validates(project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", 4 << 20, seed=3)
    add_server(project, "s", [str(disk)])
    replication.start(project, "s")
    [st] = replication.status(project, "s")
    assert isinstance(st, ServerStatus) and st.last_cycle == 1 and st.disks[0].bytes_read > 0
    assert st.cycles[-1].bottleneck in ("source", "cpu", "store", "throttle", "none")
    env = {**os.environ, "GODWIT_DATABASE_URL": project.db.sa_url.render_as_string(hide_password=False)}
    proc = subprocess.run([sys.executable, "-m", "godwit", "replicate", "status", "--json", "-p", str(project.root)],
                          capture_output=True, text=True, timeout=60, env=env, check=True)
    rows = [ServerStatus.model_validate(r) for r in json.loads(proc.stdout)]
    ages = {"rpo_seconds": None, "rpo_max_seconds": None}  # these grow between the two reads

    def timeless(x: ServerStatus) -> ServerStatus:
        return x.model_copy(update={**ages, "disks": [d.model_copy(update=ages) for d in x.disks]})

    assert [timeless(r) for r in rows] == [timeless(st)]


def test_remove_refused_while_a_cycle_runs(project: Project, tmp_path: Path) -> None:
    """`server remove --force` during a cycle used to end that cycle in an IntegrityError."""
    disk = make_raw(tmp_path / "d.raw", 24 << 20, seed=5)
    add_server(project, "s", [str(disk)])
    replication.start(project, "s")  # the initial cycle; the next one is slowed down below
    with disk.open("r+b") as f:
        f.write(os.urandom(8 << 20))
    env = {**os.environ, "GODWIT_DATABASE_URL": project.db.sa_url.render_as_string(hide_password=False)}
    proc = subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "cycle", "s", "--max-mbps", "8", "-p",
                             str(project.root)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while (h := holder(project.state_dir, "s", "cycle")) is None or h.pid != proc.pid:
            assert proc.poll() is None and time.monotonic() < deadline, "the cycle never took its lock"
            time.sleep(0.05)
        with pytest.raises(ConflictError) as exc:
            remove_server(project, "s", force=True)
        assert f"pid {proc.pid}" in exc.value.message and "replicate cycle s" in exc.value.message
        assert project.db.server("s").name == "s"
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    remove_server(project, "s", force=True)  # nothing runs now
    with project.db.tx() as c:
        assert c.execute(select(func.count()).select_from(t.disks)).scalar() == 0


def test_numbers_beyond_64_bits_name_no_row(project: Project, tmp_path: Path) -> None:
    """`migrate -r 99999999999999999999999` and `events --limit …` used to end in an OverflowError."""
    from godwit.engine.mover import apply_server
    from godwit.errors import NotFoundError, UsageError
    from godwit.migrate import migration

    huge = 99999999999999999999999
    add_server(project, "s", [str(make_raw(tmp_path / "d.raw", 2 << 20, seed=2))])
    replication.start(project, "s")
    apply_server(project, "s")
    with pytest.raises(NotFoundError, match=f"recovery point {huge} of s does not exist"):
        migration.test_migration(project, "s", recovery_point=str(huge), out_dir=tmp_path / "out")
    with pytest.raises(NotFoundError):
        project.db.cycle(project.db.server("s").id, huge)
    assert [e.message for e in project.db.events(limit=huge)][-1] == "server added with 1 disk(s)"
    with pytest.raises(UsageError, match="at least 1"):
        project.db.events(limit=0)


def test_opening_cycles_concurrently_never_reuses_a_number(project: Project) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from godwit.state import cycles

    with project.db.unit() as u:
        sid = u.servers.add("s", [NewDisk("/d", "raw", 1 << 20)]).id
    settings = cycles.CycleSettings(65536, "xxh3-128", "scan")

    def open_one(_: int) -> int:
        return cycles.open_cycle(project.db, sid, "delta", settings).number

    with ThreadPoolExecutor(4) as pool:
        numbers = list(pool.map(open_one, range(12)))
    assert sorted(numbers) == list(range(1, 13))


def test_a_removed_servers_open_cycle_leaves_nothing_for_the_next_one(project: Project, tmp_path: Path) -> None:
    """Remove a server with an interrupted cycle, add it again: its first cycle may reuse the row id
    (SQLite) and must not trip over the old cycle's kept settings."""
    from godwit.state import cycles

    disk = make_raw(tmp_path / "d.raw", 2 << 20, seed=4)
    add_server(project, "s", [str(disk)])  # its initial cycle was interrupted:
    cycles.open_cycle(project.db, project.db.server("s").id, "initial", cycles.CycleSettings(65536, "xxh3-128", "scan"))
    remove_server(project, "s", force=True)
    add_server(project, "s", [str(disk)])
    res = replication.start(project, "s")
    assert res is not None and res.number == 1 and res.kind == "initial"
    with project.db.tx() as c:
        assert c.execute(select(func.count()).select_from(t.meta).where(t.meta.c.key.like("cycle-settings/%"))
                         ).scalar() == 0
