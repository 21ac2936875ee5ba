"""Issues 8.5 (store half) and 8.8: objects in a local cache that are not files, a damaged
manifest's hint, a lost store id, and temporaries left by a killed writer."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.project.project import Project
from tests.helpers import make_raw


def run(project: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    def limit_memory() -> None:  # on a regression, fail rather than eat the machine's memory
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    return subprocess.run([sys.executable, "-m", "godwit", *args, "--project", str(project)],
                          capture_output=True, text=True, timeout=timeout, preexec_fn=limit_memory)


@pytest.fixture
def committed(project: Project, tmp_path: Path) -> Project:
    """A server with one committed cycle, not applied yet."""
    add_server(project, "vm", [str(make_raw(tmp_path / "d.raw", 4 << 20, seed=21))])
    replication.start(project, "vm")
    return project


def _packs(project: Project) -> list[Path]:
    return sorted(project.cache_dir.glob("servers/*/packs/*.pack"))


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "link-to-copy"])
def test_pack_that_is_not_a_file(committed: Project, kind: str) -> None:
    pack = _packs(committed)[0]
    copy = pack.with_name("copy")
    os.rename(pack, copy)
    if kind == "fifo":
        os.mkfifo(pack)
    else:
        os.symlink("/dev/zero" if kind == "dev-zero" else copy, pack)
    for args in (["replicate", "check", "vm"], ["mover", "run", "--once"]):
        proc = run(committed.root, *args)  # a hang fails through the timeout
        assert proc.returncode == 30, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert "not a regular file" in proc.stderr or "symbolic link" in proc.stderr
    assert "replicate resync" in proc.stderr


def test_damaged_manifest_hint_says_resync(committed: Project) -> None:
    manifest = next(committed.cache_dir.glob("servers/*/cycles/*.manifest"))
    manifest.write_bytes(manifest.read_bytes()[:-7] + b"garbage")
    proc = run(committed.root, "mover", "run", "--once")
    assert proc.returncode == 30, proc.stderr
    assert "replicate resync" in proc.stderr and "new cycle to resend" not in proc.stderr, proc.stderr


def test_lost_store_id_is_not_silently_remade(committed: Project) -> None:
    store_json = committed.cache_dir / "godwit-store.json"
    store_json.unlink()
    proc = run(committed.root, "mover", "run", "--once")
    assert proc.returncode == 20 and "godwit-store.json is missing" in proc.stderr, proc.stderr
    assert not store_json.exists()


def test_new_store_still_gets_an_id(tmp_path: Path) -> None:
    proj = tmp_path / "p"
    assert subprocess.run([sys.executable, "-m", "godwit", "init", str(proj)], capture_output=True).returncode == 0
    assert (proj / "cache" / "godwit-store.json").is_file()


def test_stale_temporaries_are_collected(committed: Project) -> None:
    packs = _packs(committed)[0].parent
    old, fresh = packs / ".tmp-0123.pack.dead", packs / ".tmp-4567.pack.live"
    old.write_bytes(b"partial")
    fresh.write_bytes(b"in flight")
    hours_ago = time.time() - 2 * 3600
    os.utime(old, (hours_ago, hours_ago))
    proc = run(committed.root, "mover", "run", "--once")
    assert proc.returncode == 0, proc.stderr
    assert not old.exists() and fresh.exists()
