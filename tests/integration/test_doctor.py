"""`godwit doctor` on this real host: real tools, real filesystems (tmpfs and ramfs mounted here),
a real venv without the libnbd binding, real state databases stamped at other revisions."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import godwit
from godwit.checks import sysdeps
from godwit.checks.doctor import EXIT_FAILED
from godwit.checks.filesystem import RAM_FILESYSTEMS, mount_of
from godwit.checks.state_revision import MIGRATIONS, head_revisions
from godwit.project.project import init

SRC = Path(godwit.__file__).resolve().parent.parent
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a filesystem needs root")


def doctor(*args: str, python: str = sys.executable, cwd: Path | None = None,
           env: dict[str, str] | None = None) -> tuple[int, dict[str, Any], str]:
    """Run `godwit doctor --json ARGS` in a fresh process; (exit code, parsed JSON, stderr)."""
    base = {k: v for k, v in os.environ.items() if k not in ("GODWIT_PROJECT", "GODWIT_DATABASE_URL")}
    run = subprocess.run([python, "-m", "godwit", "doctor", "--json", *args], capture_output=True, text=True,
                         cwd=cwd, env={**base, **(env or {})}, timeout=120)
    return run.returncode, json.loads(run.stdout), run.stderr


def by_name(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["checks"]}


@pytest.fixture
def proj(tmp_path: Path) -> Iterator[Path]:
    """A new project on a disk filesystem (where /tmp is a tmpfs, as on Debian 13, under /var/tmp)."""
    if mount_of(tmp_path)[1] not in RAM_FILESYSTEMS:
        init(tmp_path / "proj").close()
        yield tmp_path / "proj"
        return
    with tempfile.TemporaryDirectory(dir="/var/tmp") as d:
        init(Path(d, "proj")).close()
        yield Path(d, "proj")


def set_cache_path(project: Path, folder: Path) -> None:
    cfg = project / "godwit.toml"
    body = cfg.read_text()
    assert 'path = "cache"' in body
    cfg.write_text(body.replace('path = "cache"', f'path = "{folder}"', 1))


# -- the good host ----------------------------------------------------------------------------


def test_doctor_passes_on_this_host_inside_a_project(proj: Path) -> None:
    state_files = sorted(p.name for p in proj.joinpath("state").iterdir())
    code, report, err = doctor("--project", str(proj))
    checks = by_name(report)
    assert code == 0, (err, [c for c in report["checks"] if c["status"] == "fail"])
    assert report["ok"] is True and report["project"] == str(proj.resolve())
    for tool in ("qemu-img", "qemu-nbd", "qemu-storage-daemon"):
        assert checks[f"tool: {tool}"]["status"] == "pass"
        assert "7." in checks[f"tool: {tool}"]["detail"] or "version" in checks[f"tool: {tool}"]["detail"]
    assert checks["python: libnbd binding"]["status"] == "pass"
    assert checks["cache: O_DIRECT"]["status"] == "pass"
    assert checks["cache: reflink"]["status"] in ("pass", "warn")  # ext4 here: warn, with its fix
    assert checks["cache: reflink"]["status"] == "pass" or "XFS" in checks["cache: reflink"]["fix"]
    assert checks["state: schema revision"]["status"] == "pass"
    assert {"clock: wall clock", "clock: steady", "clock: synchronised"} <= checks.keys()
    assert not list(proj.joinpath("cache").glob(".tmp-godwit-doctor-*")), "scratch files left behind"
    assert sorted(p.name for p in proj.joinpath("state").iterdir()) == state_files, "doctor left SQLite files"


def test_outside_a_project_only_the_host_is_checked(tmp_path: Path) -> None:
    code, report, _ = doctor(cwd=tmp_path)
    assert code == 0 and report["project"] is None
    assert not [n for n in by_name(report) if n.startswith(("cache", "state", "project"))]
    assert "tool: qemu-img" in by_name(report)


def test_an_explicit_project_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "godwit", "doctor", "--project", str(tmp_path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 3 and "no godwit project" in run.stderr and "Traceback" not in run.stderr


def test_the_table_names_each_fix(proj: Path) -> None:
    (proj / "state" / "godwit.db").write_bytes(b"")
    run = subprocess.run([sys.executable, "-m", "godwit", "doctor", "-p", str(proj)], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == EXIT_FAILED
    assert "FAIL" in run.stdout and "fix: restore godwit.db from a backup" in run.stdout
    assert "1 failed" in run.stdout


def test_a_broken_godwit_toml_is_a_failed_check_not_a_traceback(proj: Path) -> None:
    (proj / "godwit.toml").write_text("[cache]\nbogus = 1\n")
    code, report, err = doctor("-p", str(proj))
    check = by_name(report)["project: godwit.toml"]
    assert code == EXIT_FAILED and check["status"] == "fail" and "bogus" in check["detail"]
    assert "Traceback" not in err
    assert "tool: qemu-img" in by_name(report), "the host is still checked"


# -- the libnbd binding -----------------------------------------------------------------------


@pytest.fixture
def bare_venv(tmp_path: Path) -> Iterator[Path]:
    """A fresh venv that sees godwit and its dependencies but not the libnbd and libguestfs bindings.

    Its .pth names a folder of links to this venv's site-packages minus nbd.py / libnbdmod*.so
    (and guestfs.py / libguestfsmod*.so),
    and godwit's src folder: no pip install needed, and nothing hidden by mocking.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    shadow = tmp_path / "deps"
    shadow.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name in ("nbd.py", "guestfs.py") or entry.name.startswith(("libnbdmod.", "libguestfsmod.")) \
                or entry.suffix == ".pth" or entry.name.startswith("__editable__"):
            continue
        (shadow / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "godwit-test.pth").write_text(f"{shadow}\n{SRC}\n")
    yield python


def test_a_hidden_libnbd_binding_fails_naming_the_fix(bare_venv: Path) -> None:
    hidden = subprocess.run([str(bare_venv), "-c", "import nbd"], capture_output=True, timeout=60)
    assert hidden.returncode != 0, "the binding should not be importable in the bare venv"
    code, report, _ = doctor(python=str(bare_venv))
    check = by_name(report)["python: libnbd binding"]
    assert code == EXIT_FAILED and report["ok"] is False
    assert check["status"] == "fail" and "godwit doctor --fix" in check["fix"]


def test_fix_makes_the_binding_importable(bare_venv: Path) -> None:
    code, report, err = doctor("--fix", python=str(bare_venv))
    assert code == 0, (err, report)
    assert by_name(report)["python: libnbd binding"]["status"] == "pass"
    assert any("nbd.py" in line for line in report["fixed"])
    if Path("/usr/lib/python3/dist-packages/guestfs.py").exists():  # the assess tests install it
        assert by_name(report)["python: libguestfs binding"]["status"] == "pass"
        assert any("guestfs.py" in line for line in report["fixed"])
    check = subprocess.run([str(bare_venv), "-c", "import nbd; print(nbd.NBD().get_version())"],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and check.stdout.strip(), check.stderr
    # A second --fix has nothing left to do.
    code, report, _ = doctor("--fix", python=str(bare_venv))
    assert code == 0 and report["fixed"] == []


# -- the cache folder's filesystem ------------------------------------------------------------


@pytest.fixture
def mounted(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    point = tmp_path / request.param
    point.mkdir()
    subprocess.run(["mount", "-t", request.param, "-o", "size=64m", request.param, str(point)], check=True)
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


@root_only
@pytest.mark.parametrize("mounted", ["tmpfs"], indirect=True)
def test_a_cache_on_tmpfs_fails(proj: Path, mounted: Path) -> None:
    set_cache_path(proj, mounted)
    code, report, _ = doctor("-p", str(proj))
    check = by_name(report)["cache: filesystem"]
    assert code == EXIT_FAILED
    assert check["status"] == "fail" and "tmpfs" in check["detail"] and "[cache] path" in check["fix"]
    assert not list(mounted.iterdir()), "scratch files left on the tmpfs"


@root_only
@pytest.mark.parametrize("mounted", ["ramfs"], indirect=True)
def test_a_cache_without_o_direct_fails(proj: Path, mounted: Path) -> None:
    set_cache_path(proj, mounted)
    code, report, _ = doctor("-p", str(proj))
    check = by_name(report)["cache: O_DIRECT"]
    assert code == EXIT_FAILED
    assert check["status"] == "fail" and "refuses direct I/O" in check["detail"]
    assert "ext4 or XFS" in check["fix"]
    assert not list(mounted.iterdir()), "scratch files left on the ramfs"


@pytest.fixture
def xfs(tmp_path: Path) -> Iterator[Path]:
    """A small XFS (reflink on, mkfs.xfs's default) on a loop device: 320 MiB, so under 1 GiB free."""
    image, point = tmp_path / "xfs.img", tmp_path / "xfs"
    with image.open("wb") as f:
        f.truncate(320 << 20)
    subprocess.run(["mkfs.xfs", "-q", str(image)], check=True, timeout=120)
    point.mkdir()
    subprocess.run(["mount", "-o", "loop", str(image), str(point)], check=True, timeout=60)
    try:
        yield point
    finally:
        subprocess.run(["umount", str(point)], check=False, timeout=60)


@root_only
def test_a_cache_on_small_xfs_has_reflink_and_too_little_space(proj: Path, xfs: Path) -> None:
    set_cache_path(proj, xfs)
    code, report, _ = doctor("-p", str(proj))
    checks = by_name(report)
    assert checks["cache: filesystem"]["detail"].startswith("xfs")
    assert checks["cache: O_DIRECT"]["status"] == "pass"
    assert checks["cache: reflink"]["status"] == "pass", checks["cache: reflink"]
    assert checks["cache: free space"]["status"] == "fail" and "free space on" in checks["cache: free space"]["fix"]
    assert code == EXIT_FAILED
    assert not list(xfs.glob(".tmp-godwit-doctor-*"))


# -- the state database, read-only ------------------------------------------------------------


def _stamp(db: Path, revision: str | None) -> None:
    engine = create_engine(f"sqlite:///{db}")
    with engine.begin() as c:
        if revision is None:
            c.execute(text("DELETE FROM alembic_version"))
        else:
            c.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_newer_schema_revision_fails_and_is_left_alone(proj: Path) -> None:
    db = proj / "state" / "godwit.db"
    _stamp(db, "9999_future")
    before = _digest(db)
    code, report, _ = doctor("-p", str(proj))
    check = by_name(report)["state: schema revision"]
    assert code == EXIT_FAILED and check["status"] == "fail"
    assert "9999_future" in check["detail"] and "newer godwit" in check["detail"]
    assert _digest(db) == before, "doctor changed the state database"


def test_an_older_schema_revision_warns_and_is_not_upgraded(proj: Path) -> None:
    from alembic.script import ScriptDirectory

    heads = head_revisions()
    older = [r.down_revision for r in (ScriptDirectory(str(MIGRATIONS)).get_revision(h) for h in heads)
             if r is not None and isinstance(r.down_revision, str)]
    db = proj / "state" / "godwit.db"
    _stamp(db, older[0] if older else None)  # one revision only: a database from before Alembic
    before = _digest(db)
    code, report, _ = doctor("-p", str(proj))
    check = by_name(report)["state: schema revision"]
    if older:
        assert code == 0 and check["status"] == "warn" and older[0] in check["detail"]
        assert "upgrades it" in check["fix"]
    else:
        assert code == EXIT_FAILED and check["status"] == "fail"
        assert "no schema revision recorded" in check["detail"]
    assert _digest(db) == before, "doctor upgraded the state database"


@pytest.mark.parametrize("content", [None, b"", b"this is not a database" * 100])
def test_a_missing_empty_or_damaged_database_fails_and_is_not_recreated(proj: Path, content: bytes | None) -> None:
    db = proj / "state" / "godwit.db"
    for extra in proj.joinpath("state").glob("godwit.db*"):
        extra.unlink()
    if content is not None:
        db.write_bytes(content)
    code, report, _ = doctor("-p", str(proj))
    check = by_name(report)["state: database"]
    assert code == EXIT_FAILED and check["status"] == "fail" and check["fix"]
    assert "state: schema revision" not in by_name(report)
    assert (db.read_bytes() if db.exists() else None) == content, "doctor touched the database file"


def test_postgresql_at_head_passes_and_a_newer_one_fails(tmp_path: Path, postgres_url: str) -> None:
    """On the session's real PostgreSQL (tests/postgres.py)."""
    init(tmp_path / "pg", state_url=postgres_url).close()  # creates the schema there
    proj = tmp_path / "pg"
    url = postgres_url
    code, report, err = doctor("-p", str(proj))
    assert code == 0, (err, report)
    assert by_name(report)["state: schema revision"]["status"] == "pass"
    assert by_name(report)["clock: against the state server"]["status"] == "pass"  # one host, one clock
    engine = create_engine(url)
    with engine.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    code, report, _ = doctor("-p", str(proj))
    assert code == EXIT_FAILED and "newer godwit" in by_name(report)["state: schema revision"]["detail"]
    with engine.connect() as c:
        assert c.execute(text("SELECT version_num FROM alembic_version")).scalar() == "9999_future"
    engine.dispose()


def test_an_unreachable_postgresql_fails_without_its_password(proj: Path) -> None:
    url = "postgresql+psycopg://godwit:secret@127.0.0.1:1/godwit"
    code, report, _ = doctor("-p", str(proj), env={"GODWIT_DATABASE_URL": url})  # as --database-url sets it
    check = by_name(report)["state: database"]
    assert code == EXIT_FAILED and check["status"] == "fail" and "127.0.0.1:1" in check["detail"]
    assert "secret" not in json.dumps(report), "the password was printed"


@pytest.mark.parametrize("url", ["bogus://x", "postgresql+psycopg2://u@h/db", "not a url"])
def test_a_state_url_godwit_does_not_open_fails_with_its_hint(proj: Path, url: str) -> None:
    code, report, err = doctor("-p", str(proj), env={"GODWIT_DATABASE_URL": url})
    check = by_name(report)["state: database"]
    assert code == EXIT_FAILED and check["status"] == "fail" and check["fix"], report
    assert "Traceback" not in err


# -- the system package list ------------------------------------------------------------------


def test_the_package_list_covers_what_godwit_and_its_tests_use() -> None:
    names = {p.name for p in sysdeps.packages()}
    assert {"qemu-utils", "qemu-system-common", "python3-libnbd", "e2fsprogs", "rsync", "openssl",
            "libsecret-1-0", "xfsprogs", "postgresql", "nodejs", "npm"} <= names
    assert sysdeps.missing(["run", "demo", "test"]) == [], "this host should have every package"


def _list(tmp_path: Path) -> Path:
    lst = tmp_path / "packages.txt"
    lst.write_text("# test list\ngodwit-no-such-package  test  cmd:godwit-no-such-command  nothing\n"
                   "coreutils  run  cmd:ls  ls\n")
    return lst


def test_sysdeps_does_nothing_when_everything_is_there(tmp_path: Path) -> None:
    run = subprocess.run(["python3", sysdeps.__file__, "--list", str(_list(tmp_path)), "ensure", "run"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stdout == "" and run.stderr == ""


@pytest.mark.skipif(shutil.which("setpriv") is None or os.geteuid() != 0 or not Path("/usr/bin/python3").exists(),
                    reason="needs root, setpriv and the system python3")
def test_sysdeps_as_a_user_prints_the_one_command() -> None:
    with tempfile.TemporaryDirectory() as d:  # outside pytest's root-only tmp folder: the user reads it
        os.chmod(d, 0o755)
        script = Path(d, "sysdeps.py")
        shutil.copy(sysdeps.__file__, script)
        lst = _list(Path(d))
        for f in (script, lst):
            f.chmod(0o644)
        run = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
                              str(script), "--list", str(lst), "ensure", "run", "test"],
                             capture_output=True, text=True, timeout=60, cwd="/")
    assert run.returncode == 1, run.stderr
    assert ("sudo apt-get update && sudo apt-get install -y --no-install-recommends godwit-no-such-package"
            in run.stderr)
    assert "coreutils" not in run.stderr


def test_a_hidden_libguestfs_binding_is_a_warning_naming_the_fix(bare_venv: Path) -> None:
    """Only `assess` and `prepare` need libguestfs: its absence warns, and never fails a host."""
    _, report, _ = doctor(python=str(bare_venv))
    finding = by_name(report)["python: libguestfs binding"]
    assert finding["status"] == "warn"
    assert "assess" in finding["detail"] and ("doctor --fix" in finding["fix"] or "apt-get" in finding["fix"])
