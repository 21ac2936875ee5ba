"""The session's PostgreSQL (tests/postgres.py) dies with a test session killed by SIGKILL: it is
pytest's own child with a parent-death signal, not a server daemonized by pg_ctl."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

INNER = '''
import time
def test_hold(postgres):
    print("PORT", postgres.port, flush=True)
    time.sleep(600)
'''


def _postmaster(port: int) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"postgres -D .* -p {port} "], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_a_killed_session_leaves_no_server(tmp_path: Path) -> None:
    (tmp_path / "test_hold.py").write_text(INNER)
    session = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p",
                                "tests.postgres", str(tmp_path / "test_hold.py"), "--rootdir", str(tmp_path)],
                               cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                               text=True)
    try:
        assert session.stdout is not None
        port = 0
        deadline = time.monotonic() + 120
        while not port:
            assert time.monotonic() < deadline and session.poll() is None, "the session never started PostgreSQL"
            line = session.stdout.readline()
            if "PORT " in line:
                port = int(line.split("PORT ", 1)[1].split()[0])
        assert _postmaster(port), "no postmaster found for the session's port"
    finally:
        session.send_signal(signal.SIGKILL)
        session.wait()
    deadline = time.monotonic() + 20
    while _postmaster(port) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _postmaster(port) == []
