"""One real PostgreSQL per test session (Debian's `postgresql` package), a fresh database per test.

initdb refuses to run as root (FIELD-NOTES): as root the server runs as the `postgres` user on a
data folder it owns. The server listens on 127.0.0.1 and a free port, with durability off (a test
database is thrown away) and is stopped and removed at the end of the session. The postmaster is
pytest's own child (not daemonized by pg_ctl) with a parent-death signal, so a session killed with
SIGKILL leaves no server running. Missing binaries
fail the session loudly with the install command: the state suite must never skip PostgreSQL.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

INSTALL = "apt-get install -y postgresql"


def _bindir() -> Path:
    env = os.environ.get("GODWIT_PG_BINDIR")
    candidates = [Path(env)] if env else sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    for d in candidates:
        if (d / "initdb").exists() and (d / "postgres").exists():
            return d
    pytest.fail(f"PostgreSQL server binaries not found (looked in {env or '/usr/lib/postgresql/*/bin'}); "
                f"the state tests run against a real PostgreSQL: `{INSTALL}`", pytrace=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    port: int
    socket_dir: Path
    _names: itertools.count[int]

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as c:
            c.execute(sql)  # type: ignore[arg-type]  # test-made names only

    def create_database(self) -> str:
        name = f"godwit_test_{next(self._names)}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _run_as_owner(args: list[str], owner: str | None) -> None:
    cmd = args if owner is None else ["su", owner, "-s", "/bin/sh", "-c", shlex.join(args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")


def _die_with_parent_hook() -> Callable[[], None]:
    """For the postmaster: an immediate shutdown (SIGQUIT) when pytest dies, even by SIGKILL (Linux
    prctl PR_SET_PDEATHSIG). subprocess changes the uid before it calls the hook, and a uid change
    would clear the setting, so it is set there, last. ctypes is loaded here, in pytest: the child
    runs as ``postgres`` and may not read this interpreter's files."""
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def hook() -> None:
        prctl(1, signal.SIGQUIT, 0, 0, 0)

    return hook


def _ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """Start one PostgreSQL for the session; stop it and remove its folder afterwards."""
    bindir = _bindir()
    owner: str | None = None
    uid: int | None = None
    gid: int | None = None
    base = Path(tempfile.mkdtemp(prefix="godwit-pg-"))
    if os.geteuid() == 0:
        owner = "postgres"
        pw = pwd.getpwnam(owner)
        os.chown(base, pw.pw_uid, pw.pw_gid)
        uid, gid = pw.pw_uid, pw.pw_gid
    data, sock, log = base / "data", base / "sock", base / "server.log"
    port = _free_port()
    server: subprocess.Popen[bytes] | None = None
    try:
        _run_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions"], owner)
        _run_as_owner(["mkdir", "-p", str(sock)], owner)
        args = [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sock)]
        for setting in ("listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off", "full_page_writes=off",
                        "max_connections=200"):
            args += ["-c", setting]
        with open(log, "ab") as out:
            server = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                      preexec_fn=_die_with_parent_hook(), user=uid, group=gid,
                                      extra_groups=None if uid is None else [])
        deadline = time.monotonic() + 60
        while not _ready(port):
            if server.poll() is not None:
                raise RuntimeError(f"postgres exited ({server.returncode}) before it answered")
            if time.monotonic() > deadline:
                raise RuntimeError("postgres did not answer within 60 s")
            time.sleep(0.1)
    except RuntimeError as exc:
        if server is not None:
            server.kill()
            server.wait()
        tail = log.read_text()[-2000:] if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"cannot start PostgreSQL: {exc}\n{tail}", pytrace=False)
    try:
        yield PostgresServer(port, sock, itertools.count(1))
    finally:
        try:
            server.send_signal(signal.SIGQUIT)  # immediate shutdown: the databases are thrown away
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        finally:
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test."""
    name = postgres.create_database()
    yield postgres.url(name)
    postgres.drop_database(name)
