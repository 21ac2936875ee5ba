"""A real `godwit serve` in a subprocess, on a project with one or more small raw servers.

The service binds port 0 and prints its address; tests talk to it over real HTTP(S) with httpx.
"""

from __future__ import annotations

import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.helpers import make_raw


def godwit(project: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "godwit", *args, "-p", str(project)], capture_output=True,
                          text=True, timeout=120, check=False)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def make_project(root: Path, state_url: str | None, servers: tuple[str, ...] = ("web",),
                 size: int = 4 << 20) -> Path:
    """A project (SQLite, or ``state_url``) with one raw disk per server and an admin token."""
    from godwit.engine.inventory import add_server
    from godwit.project.project import init

    p = init(root / "proj", state_url=state_url)
    try:
        for i, name in enumerate(servers):
            add_server(p, name, [str(make_raw(root / f"{name}.raw", size, seed=i + 1))])
    finally:
        p.close()
    return root / "proj"


def create_token(project: Path, name: str, role: str) -> str:
    """A token made as `godwit token create` makes it (the CLI itself is tested in test_token_cli)."""
    from godwit.project.project import open_project
    from godwit.state.tokens import Tokens

    p = open_project(project)
    try:
        with p.db.unit() as u:
            return Tokens(u.connection).create(p.config.name, role, name).secret
    finally:
        p.close()


@dataclass
class Service:
    url: str
    project: Path
    proc: subprocess.Popen[str]
    verify: ssl.SSLContext | bool = True
    stderr: list[str] = field(default_factory=list)

    def client(self, token: str | None = None, **kw: object) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, verify=self.verify, timeout=60, **kw)  # type: ignore[arg-type]


@contextmanager
def running(project: Path, *extra: str, verify: ssl.SSLContext | bool = True, timeout: float = 30) -> Iterator[Service]:
    """Start `godwit serve --port 0` and wait for its address; SIGTERM it at the end."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "godwit", "serve", "--port", "0", "-p", str(project), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"godwit serve did not start: {proc.stderr.read() if proc.stderr else ''}")
            if sel.select(timeout=0.5):
                line = proc.stdout.readline()
                if "listening on " in line:
                    url = line.split("listening on ", 1)[1].strip()
        yield Service(url, project, proc, verify)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_for(predicate: object, timeout: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def finish(client: httpx.Client, response: httpx.Response, timeout: float = 60) -> dict[str, object]:
    """Follow the operation a 202 answer started until it ends; its final JSON."""
    assert response.status_code == 202, response.text
    location = response.headers["location"]
    deadline = time.monotonic() + timeout
    while True:
        op: dict[str, object] = client.get(location).json()
        if op["state"] in ("succeeded", "failed") or time.monotonic() > deadline:
            return op
        time.sleep(0.1)


def done(client: httpx.Client, response: httpx.Response, timeout: float = 60) -> object:
    """The result of an operation that must succeed."""
    op = finish(client, response, timeout)
    assert op["state"] == "succeeded", op
    return op["result"]
