"""Bad input through the real command line: one clear line, a hint, a non-zero exit, no traceback,
and nothing already committed damaged."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.project.project import Project
from tests.helpers import Replayer, make_raw, scribble


def run(*args: str, project: Path | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--project", str(project)] if project is not None else []
    return subprocess.run([sys.executable, "-m", "godwit", *args, *extra], capture_output=True, text=True,
                          timeout=120)


def assert_clean_error(proc: subprocess.CompletedProcess[str], code: int | None = None, match: str = "") -> None:
    assert proc.returncode != 0
    if code is not None:
        assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    assert "godwit: error:" in proc.stderr or "Error" in proc.stderr, proc.stderr
    assert match in proc.stderr, proc.stderr


@pytest.fixture
def proj(project: Project, tmp_path: Path) -> Path:
    add_server(project, "web", [str(make_raw(tmp_path / "d.raw", 4 << 20))])
    return project.root


def test_no_project(tmp_path: Path) -> None:
    assert_clean_error(run("server", "list", project=tmp_path / "nowhere"), 3, "no godwit project")


def test_init_twice(proj: Path) -> None:
    assert_clean_error(run("init", str(proj)), 5, "already a godwit project")


def test_unknown_server_everywhere(proj: Path) -> None:
    for args in (["replicate", "start", "nope"], ["replicate", "cycle", "nope"], ["replicate", "status", "nope"],
                 ["recovery-points", "nope"], ["verify", "nope"], ["server", "remove", "nope"],
                 ["migrate", "nope", "--test", "--out", "/tmp/x"]):
        assert_clean_error(run(*args, project=proj), 4, "no server named 'nope'")


def test_bad_disks(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(run("server", "add", "a", "--disk", str(tmp_path / "missing.raw"), project=proj), 10,
                       "does not exist")
    vdi = tmp_path / "d.vdi"
    subprocess.run(["qemu-img", "create", "-q", "-f", "vdi", str(vdi), "1M"], check=True)
    assert_clean_error(run("server", "add", "a", "--disk", str(vdi), project=proj), 10, "format 'vdi'")
    bad = tmp_path / "bad.qcow2"
    bad.write_bytes(b"QFI\xfb" + os.urandom(1000))
    assert_clean_error(run("server", "add", "a", "--disk", str(bad), project=proj), 10)
    empty = tmp_path / "empty.raw"
    empty.write_bytes(b"")
    assert_clean_error(run("server", "add", "a", "--disk", str(empty), project=proj), 10, "empty")
    assert_clean_error(run("server", "add", "web", "--disk", str(tmp_path / "d.raw"), project=proj), 5,
                       "already exists")
    assert_clean_error(run("server", "add", "bad/name", "--disk", str(tmp_path / "d.raw"), project=proj), 2,
                       "not valid")


def test_bad_options(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(run("replicate", "cycle", "web", project=proj), 5, "not enabled")
    assert run("replicate", "start", "web", project=proj).returncode == 0
    assert_clean_error(run("replicate", "cycle", "web", "--max-mbps", "-3", project=proj), 2, "between")
    assert run("mover", "run", "--once", project=proj).returncode == 0
    assert_clean_error(run("migrate", "web", "--test", "--format", "vmdk", "--out", str(tmp_path / "o"),
                           project=proj), 2, "format 'vmdk'")
    assert_clean_error(run("migrate", "web", "--test", "-r", "7", "--out", str(tmp_path / "o"), project=proj), 4,
                       "does not exist")
    assert_clean_error(run("migrate", "web", "--test", project=proj), 2, "--out")


def test_corrupt_config(proj: Path) -> None:
    (proj / "godwit.toml").write_text("[cache]\nkind = 'tape'\n")
    assert_clean_error(run("server", "list", project=proj), 3, "kind 'tape' is unknown")


@contextmanager
def mounted_tmpfs(path: Path, size: str) -> Iterator[None]:
    path.mkdir(exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.fail("these tests need root to mount a tmpfs (CI runs as root)")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _move_cache_onto(project: Project, path: Path) -> None:
    for f in project.cache_dir.rglob("*"):
        if f.is_file():
            dst = path / f.relative_to(project.cache_dir)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(f.read_bytes())


def test_full_cache_keeps_committed_cycles(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", 8 << 20, seed=3)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    first = img.read_bytes()
    saved = tmp_path / "saved-cache"
    saved.mkdir()
    _move_cache_onto(project, saved)
    with mounted_tmpfs(project.cache_dir, "3m"):
        for f in saved.rglob("*"):
            if f.is_file():
                dst = project.cache_dir / f.relative_to(saved)
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(f.read_bytes())
        scribble(img, seed=9, writes=40, max_len=400_000)
        proc = run("replicate", "cycle", "s", project=project.root)
        assert_clean_error(proc, 21, "cache store is full")
        replay = Replayer(project, "s")
        replay.catch_up()
        assert replay.applied == 1 and bytes(replay.disks[0]) == first
        assert [c.state for c in project.db.cycles(project.db.server("s").id)] == ["committed", "open"]


def test_read_only_cache(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", 4 << 20, seed=4)
    add_server(project, "s", [str(img)])
    saved = tmp_path / "saved"
    saved.mkdir()
    _move_cache_onto(project, saved)
    with mounted_tmpfs(project.cache_dir, "16m"):
        (project.cache_dir / "godwit-store.json").write_bytes((saved / "godwit-store.json").read_bytes())
        subprocess.run(["mount", "-o", "remount,ro", str(project.cache_dir)], check=True)
        proc = run("replicate", "start", "s", project=project.root)
        assert_clean_error(proc, 22, "not writable")


# -- issue 8.9 / 8.10: one validator for numbers, one JSON error path, no markup from user text --

def test_numbers_out_of_range_are_usage_errors(proj: Path, tmp_path: Path) -> None:
    huge = "99999999999999999999999"
    for args, match in ((["events", "--limit", huge], "--limit"),
                        (["migrate", "web", "--test", "-r", huge, "--out", str(tmp_path / "o")], "--recovery-point"),
                        (["verify", "web", "-r", "-1"], "--recovery-point"),
                        (["mover", "run", "--interval", "-1"], "--interval"),
                        (["replicate", "cycle", "web", "--max-mbps", "1e-9"], "--max-mbps"),
                        (["replicate", "cycle", "web", "--max-mbps", "nan"], "--max-mbps"),
                        (["replicate", "run", "--once", "--interval", "-5"], "--interval")):
        assert_clean_error(run(*args, project=proj), 2, match)


@pytest.mark.parametrize("text, match", [
    ("cache = 5\n", "[cache] must be a table"),
    ("replicas = 5\n", "[replicas] must be a table"),
    ("replication = [1, 2]\n", "[replication] must be a table"),
    ("[replication]\nbogus = 1\n", "unknown key(s) in [replication]: bogus"),
    ("[replication.throttle]\nmax_mbps = nan\n", "max_mbps"),
    ("[replication.throttle]\nmax_mbps = inf\n", "max_mbps"),
    ("[replication]\ninterval_seconds = 99999999999999999\n", "interval_seconds"),
    ('[cache]\npath = "a\\u0000b"\n', "NUL"),
    ('[replicas]\npath = ""\n', "[replicas] path is empty"),
    ('[cache]\npath = " "\n', "[cache] path is empty"),
])
def test_bad_config_values_are_config_errors(proj: Path, text: str, match: str) -> None:
    (proj / "godwit.toml").write_text(text)
    assert_clean_error(run("server", "list", project=proj), 3, match)


def test_user_text_is_never_markup(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(run("server", "add", "x", "--disk", "/tmp/[/]y", project=proj), 10, "/tmp/[/]y")
    (tmp_path / "[bold]d[").mkdir()
    odd = tmp_path / "[bold]d[" / "]x.raw"  # the path holds "[bold]d[/]x.raw"
    make_raw(odd, 1 << 20)
    proc = run("server", "add", "odd", "--disk", str(odd), project=proj)
    assert proc.returncode == 0 and str(odd) in proc.stdout, proc.stderr
    listing = subprocess.run([sys.executable, "-m", "godwit", "server", "list", "--project", str(proj)],
                             capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "400"})
    assert listing.returncode == 0 and "[bold]d[/]x.raw" in listing.stdout, listing.stdout


def test_names_and_paths_are_checked(proj: Path, tmp_path: Path) -> None:
    assert_clean_error(run("server", "add", "a\n", "--disk", str(tmp_path / "d.raw"), project=proj), 2, "not valid")
    assert_clean_error(run("init", str(tmp_path / "n"), "--name", "a" * 300), 2, "not valid")
    assert_clean_error(run("init", str(tmp_path / ("a" * 300))), 3, "cannot create a project")
    assert_clean_error(run("server", "list", project=tmp_path / ("b" * 300)), 3)
    here = tmp_path / "here"
    here.mkdir()
    proc = subprocess.run([sys.executable, "-m", "godwit", "init", ""], capture_output=True, text=True, cwd=here,
                          timeout=60)
    assert_clean_error(proc, 2, "empty")
    assert not (here / "godwit.toml").exists()


def test_json_errors_are_json(proj: Path, tmp_path: Path) -> None:
    import json

    for args, code in ((["replicate", "cycle", "nope", "--json"], 4),
                       (["events", "--limit", "x", "--json"], 2),
                       (["events", "--limit", "0", "--json"], 2),
                       (["server", "add", "web", "--disk", str(tmp_path / "d.raw"), "--json"], 5)):
        proc = run(*args, project=proj)
        assert_clean_error(proc, code)
        doc = json.loads(proc.stdout)
        assert doc["error"]["exit_code"] == code and doc["error"]["message"], doc
        assert "hint" in doc["error"]
    assert run("replicate", "start", "web", project=proj).returncode == 0
    again = run("replicate", "start", "web", "--json", project=proj)
    assert again.returncode == 0 and json.loads(again.stdout)["server"] == "web", again.stdout


def test_config_that_is_not_a_file(proj: Path) -> None:
    toml = proj / "godwit.toml"
    toml.unlink()
    toml.symlink_to("/dev/zero")
    assert_clean_error(run("server", "list", project=proj), 3)
    toml.unlink()
    os.mkfifo(toml)
    assert_clean_error(run("server", "list", project=proj), 3)  # a hang fails through the timeout
    toml.unlink()
    toml.write_bytes(b"#" * (2 << 20))
    assert_clean_error(run("server", "list", project=proj), 3, "far smaller")


def test_verify_mismatch_under_json_is_one_document(proj: Path) -> None:
    import json

    assert run("replicate", "start", "web", project=proj).returncode == 0
    assert run("mover", "run", "--once", project=proj).returncode == 0
    img = next((proj / "replicas").glob("web-*/disk0-*.img"))
    with open(img, "r+b") as f:
        f.seek(12345)
        f.write(b"\xff" * 16)
    proc = run("verify", "web", "--json", project=proj)
    assert_clean_error(proc, 41)
    assert json.loads(proc.stdout)["ok"] is False
