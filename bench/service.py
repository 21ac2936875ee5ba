"""The service's overhead: requests per second and latency of its read API, and a cycle through
`--service` against the same cycle run locally.

1. A project with 50 servers (1 MiB raw disks, none replicated: the figures are the API's and the
   state's, not the engine's) is served by a real `godwit serve` on loopback, on SQLite and on a
   throwaway PostgreSQL (Debian's server, started as tests/postgres.py starts it). For a few
   seconds each, 8 client threads (one keep-alive connection each) call ``GET /healthz`` and
   ``GET /api/v1/replications`` (the status of all 50 servers); requests per second, p50 and p99.
2. ``godwit replicate cycle`` of a small disk (4 MiB, 1% rewritten before each cycle), run as a
   process on the local project and as a process with ``--service URL`` (start the operation, poll
   it every 0.2 s): median wall of 5 runs each, and the operation's own time in the service.

The clients and the service share this machine's two cores: the rates are a floor, not a ceiling.

    .venv/bin/python bench/service.py [--seconds 3] [--servers 50] [--no-postgres] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.service.harness import create_token, running  # noqa: E402

THREADS = 8


def make_project(root: Path, state_url: str | None, servers: int) -> Path:
    from godwit.engine.inventory import add_server
    from godwit.project.project import init

    p = init(root / "proj", state_url=state_url)
    try:
        for i in range(servers):
            disk = root / f"s{i:03d}.raw"
            with disk.open("wb") as f:
                f.truncate(1 << 20)
            add_server(p, f"s{i:03d}", [str(disk)])
        small = root / "small.raw"
        small.write_bytes(random.Random(1).randbytes(4 << 20))
        add_server(p, "small", [str(small)])
    finally:
        p.close()
    return root / "proj"


def load(url: str, token: str, path: str, seconds: float) -> dict[str, float]:
    """Requests per second and latency percentiles (ms) of GET ``path`` from THREADS clients."""
    latencies: list[list[float]] = [[] for _ in range(THREADS)]
    errors = [0] * THREADS
    stop = time.monotonic() + seconds

    def client(i: int) -> None:
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                r = c.get(path)
                latencies[i].append(time.perf_counter() - t0)
                errors[i] += r.status_code != 200

    threads = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
    t0 = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    wall = time.monotonic() - t0
    every = sorted(x for xs in latencies for x in xs)
    return {"requests": len(every), "rps": len(every) / wall, "p50_ms": 1000 * every[len(every) // 2],
            "p99_ms": 1000 * every[min(len(every) - 1, int(len(every) * 0.99))], "errors": sum(errors)}


def _cli(*args: str, token: str | None = None) -> float:
    env = {k: v for k, v in os.environ.items() if k not in ("GODWIT_SERVICE", "GODWIT_TOKEN")}
    if token:
        env["GODWIT_TOKEN"] = token
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "godwit", *args], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"godwit {' '.join(args[:4])} failed: {proc.stderr[-400:]}")
    return time.perf_counter() - t0


def _touch(disk: Path, seed: int) -> None:
    rng = random.Random(seed)
    with disk.open("r+b") as f:
        for _ in range(4):
            f.seek(rng.randrange(0, (4 << 20) - 16384))
            f.write(rng.randbytes(10486))


def cycles(root: Path, runs: int) -> dict[str, float]:
    """Median wall of `godwit replicate cycle small`, local and through --service."""
    local = make_project(root / "local", None, 0)
    served = make_project(root / "served", None, 0)
    _cli("replicate", "start", "small", "-p", str(local))
    token = create_token(served, "bench", "operator")
    walls: dict[str, list[float]] = {"local": [], "service": [], "in_service": []}
    with running(served, "--mover-interval", "0") as svc:
        _cli("--service", svc.url, "replicate", "start", "small", token=token)
        for i in range(runs):
            _touch(local.parent / "small.raw", i)
            _touch(served.parent / "small.raw", i)
            walls["local"].append(_cli("replicate", "cycle", "small", "-p", str(local)))
            walls["service"].append(_cli("--service", svc.url, "replicate", "cycle", "small", token=token))
        with svc.client(token) as c:
            ops = [o for o in c.get("/api/v1/operations", params={"server": "small"}).json() if o["kind"] == "cycle"]
        walls["in_service"] = [o["finished"] - o["started"] for o in ops]
    return {k: statistics.median(v) for k, v in walls.items()}


@contextmanager
def postgres() -> Iterator[str]:
    """A throwaway PostgreSQL on loopback (as tests/postgres.py starts one), and a database in it."""
    import pwd

    from tests.postgres import _bindir, _free_port, _run_as_owner

    bindir, owner = _bindir(), "postgres" if os.geteuid() == 0 else None
    base = Path(tempfile.mkdtemp(prefix="godwit-bench-pg-"))
    if owner:
        pw = pwd.getpwnam(owner)
        os.chown(base, pw.pw_uid, pw.pw_gid)
    data, port = base / "data", _free_port()
    try:
        _run_as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                       "--no-sync", "--no-instructions"], owner)
        _run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "log"), "-o",
                       f"-p {port} -k {base} -c listen_addresses=127.0.0.1", "-w", "-t", "60", "start"], owner)
        try:
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"
        finally:
            _run_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], owner)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def api(root: Path, state_url: str | None, servers: int, seconds: float) -> dict[str, dict[str, float]]:
    project = make_project(root, state_url, servers)
    token = create_token(project, "bench", "reader")
    with running(project, "--mover-interval", "0") as svc:
        load(svc.url, token, "/healthz", 0.5)  # warm up the connections and the pool
        return {path: load(svc.url, token, path, seconds) for path in ("/healthz", "/api/v1/replications")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--servers", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    results: dict[str, object] = {"servers": args.servers, "threads": THREADS}
    with tempfile.TemporaryDirectory(prefix="godwit-bench-service-") as tmp:
        root = Path(tmp)
        results["sqlite"] = api(root / "sqlite", None, args.servers, args.seconds)
        if not args.no_postgres:
            with postgres() as url:
                results["postgresql"] = api(root / "pg", url, args.servers, args.seconds)
        results["cycle"] = cycles(root / "cycles", args.runs)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"godwit serve on loopback, {args.servers} servers in the state, {THREADS} client threads:")
    print(f"{'database':<11} {'path':<22} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    for db in ("sqlite", "postgresql"):
        for path, r in results.get(db, {}).items():  # type: ignore[attr-defined]
            print(f"{db:<11} {path:<22} {r['rps']:>8.0f} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['errors']:>7.0f}")
    c = results["cycle"]
    assert isinstance(c, dict)
    print(f"replicate cycle of a 4 MiB disk (median of {args.runs}): local {c['local']:.2f}s, "
          f"through --service {c['service']:.2f}s (the operation itself {c['in_service']:.2f}s in the service)")


if __name__ == "__main__":
    main()
