"""Issue 8.1 and 8.9, the state half: a missing, empty, truncated or garbage state database is never
replaced by a fresh one when the project holds data, and is a one-line error, not a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import ProjectError
from godwit.project.project import init, open_project
from tests.helpers import make_raw


def _with_data(tmp_path: Path) -> Path:
    """A project with a committed, applied cycle: block hashes, a replica, cache objects."""
    root = tmp_path / "proj"
    p = init(root)
    try:
        add_server(p, "s", [str(make_raw(tmp_path / "d.raw", 4 << 20, seed=1))])
        replication.start(p, "s")
        apply_server(p, "s")
    finally:
        p.close()
    return root


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "godwit", *args, "-p", str(root)], capture_output=True, text=True,
                          timeout=60)


def _one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == ProjectError.exit_code, proc.stderr
    assert "Traceback" not in proc.stderr
    first, *rest = proc.stderr.strip().splitlines()
    assert first.startswith("godwit: error:") and all(w in first for w in words), first
    assert rest and rest[0].startswith("hint:") and "restore" in rest[0]


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_a_lost_database_is_not_recreated_over_data(tmp_path: Path, damage: str) -> None:
    root = _with_data(tmp_path)
    db = root / "state" / "godwit.db"
    if damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    with pytest.raises(ProjectError, match=damage) as exc:
        open_project(root)
    assert exc.value.hint and "restore" in exc.value.hint
    assert (not db.exists()) if damage == "missing" else db.stat().st_size == 0  # nothing made in its place
    _one_line_error(_cli(root, "server", "list"), damage)


def test_a_lost_database_of_a_project_without_data_starts_afresh(tmp_path: Path) -> None:
    init(tmp_path / "proj").close()
    (tmp_path / "proj" / "state" / "godwit.db").unlink()
    p = open_project(tmp_path / "proj")
    assert p.db.servers() == []
    p.close()


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_database_is_a_one_line_error(tmp_path: Path, damage: str) -> None:
    root = _with_data(tmp_path)
    db = root / "state" / "godwit.db"
    raw = db.read_bytes()
    assert len(raw) > 4 * 4096
    db.write_bytes(b"not a database, " * 300 if damage == "garbage" else raw[:2 * 4096])
    _one_line_error(_cli(root, "replicate", "status"), "damaged")
    assert db.stat().st_size in (4800, 2 * 4096)  # left as it was, for the person restoring it


def test_an_empty_postgresql_database_is_not_taken_for_a_projects_state(tmp_path: Path, postgres_url: str) -> None:
    root = _with_data(tmp_path)
    with pytest.raises(ProjectError, match="holds no godwit state"):
        open_project(root, database_url=postgres_url)


@pytest.mark.parametrize(("url", "words"), [
    ("bogus://x", ["'bogus' is not supported"]),
    ("postgresql+psycopg2://u@127.0.0.1/db", ["psycopg2", "not supported"]),
    ("postgresql://u:s3cret@127.0.0.1:1/db", ["cannot use the state database", "Connection refused"]),
])
def test_bad_state_urls_are_one_line_errors(tmp_path: Path, url: str, words: list[str]) -> None:
    init(tmp_path / "proj").close()
    cfg = tmp_path / "proj" / "godwit.toml"
    cfg.write_text(cfg.read_text() + f'\n[state]\nurl = "{url}"\n')
    proc = _cli(tmp_path / "proj", "server", "list")
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    first = proc.stderr.strip().splitlines()[0]
    assert all(w in first for w in words), first
    assert "s3cret" not in proc.stderr


def test_a_postgresql_url_without_a_driver_means_psycopg(tmp_path: Path, postgres_url: str) -> None:
    init(tmp_path / "proj").close()
    plain = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    proc = subprocess.run([sys.executable, "-m", "godwit", "--database-url", plain, "server", "list", "--json", "-p",
                           str(tmp_path / "proj")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stderr
    import psycopg

    with psycopg.connect(plain) as c:  # the schema went to PostgreSQL, not to a SQLite file
        assert c.execute("SELECT version_num FROM alembic_version").fetchone() is not None
