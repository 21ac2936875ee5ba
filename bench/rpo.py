"""The RPO of continuous replication of a live disk.

A qcow2 (default 1 GiB, 60% data) is served by a real qemu-storage-daemon; a writer process
changes it through the daemon's NBD export at a steady rate (default 1 MB/s of random 4-64 KiB
writes) while ``godwit replicate run --continuous`` (tracker ``bitmap``, local cache and
replicas, so the mover seals a recovery point after every cycle) runs for the duration. Every
second the bench samples the RPO: the age of the newest sealed recovery point, counted from the
start of the cycle that made it (its point in time is taken milliseconds after that start).
Printed: p50, p99 and max over the run.

With ``--store azurite`` the cache is a container of a local Azurite (HTTP, in memory; the
replicas stay local so the mover still seals points).

    .venv/bin/python bench/rpo.py [--size-gib 1] [--seconds 120] [--rate-mbps 1] [--store local|azurite] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchimage import MIB, log, make_image

REPO = Path(__file__).resolve().parents[1]
# bench/azure.py would shadow the Azure SDK's package: this folder leaves sys.path (benchimage is in).
sys.path[:] = [p for p in sys.path if Path(p or os.getcwd()).resolve() != REPO / "bench"]
sys.path.insert(0, str(REPO))

from tests.qemu_daemon import QemuDaemon, start_writer  # noqa: E402

from godwit.engine import lifecycle  # noqa: E402
from godwit.engine.inventory import add_server  # noqa: E402
from godwit.project.project import init, open_project  # noqa: E402

GODWIT = Path(sys.executable).with_name("godwit")


def _quantile(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def _azurite_cache(stack: contextlib.ExitStack, workdir: Path) -> str:
    """Start an in-memory Azurite (bench/azure.py's), return a [cache] section for it."""
    spec = importlib.util.spec_from_file_location("bench_azure", REPO / "bench" / "azure.py")
    assert spec is not None and spec.loader is not None
    az_mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_azure"] = az_mod  # dataclasses look their module up there
    spec.loader.exec_module(az_mod)
    binary = az_mod.find_tool("GODWIT_AZURITE", [REPO / ".tools/node_modules/.bin/azurite-blob"], "azurite-blob")
    if binary is None:
        raise SystemExit("azurite-blob not found: " + az_mod.INSTALL_HINT if hasattr(az_mod, "INSTALL_HINT")
                         else "azurite-blob not found (npm install --prefix .tools azurite@3)")
    key = base64.b64encode(secrets.token_bytes(64)).decode()
    os.environ[az_mod.KEY_ENV] = key  # the loop subprocess inherits it; never printed
    az = stack.enter_context(az_mod.Azurite(binary, workdir, key, https=False))
    opts = az.options(az.container("cache"))
    return "[cache]\nkind = \"azure\"\n" + "".join(f"{k} = {az_mod.toml_value(v)}\n" for k, v in opts.items())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=1.0)
    ap.add_argument("--seconds", type=int, default=120)
    ap.add_argument("--rate-mbps", type=float, default=1.0)
    ap.add_argument("--store", choices=("local", "azurite"), default="local")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = int(args.size_gib * 1024) * MIB
    with tempfile.TemporaryDirectory(prefix="godwit-rpo-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        cache_section = None
        if args.store == "azurite":
            cache_section = _azurite_cache(stack, root)
        make_image(root / "image.raw", size, seed=3)
        qcow = root / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(root / "image.raw"), str(qcow)],
                       check=True)
        (root / "image.raw").unlink()
        daemon = QemuDaemon(root / "qsd", image=qcow, fleece_dir=root / "fleece").start()
        loop: subprocess.Popen[bytes] | None = None
        writer = None
        try:
            proj = init(root / "proj")
            toml = proj.root / "godwit.toml"
            text = toml.read_text().replace('tracker = "scan"', 'tracker = "bitmap"', 1)
            if cache_section is not None:
                start = text.index("[cache]\n")
                text = text[:start] + cache_section + text[text.index("\n[", start):]
            toml.write_text(text)
            proj.close()
            proj = open_project(root / "proj")
            add_server(proj, "s", [daemon.spec])
            t0 = time.perf_counter()
            lifecycle.start(proj, "s")
            log(f"initial cycle {time.perf_counter() - t0:.1f} s")
            writer = start_writer(daemon, size, rate=args.rate_mbps * 1e6)
            loop = subprocess.Popen([str(GODWIT), "replicate", "run", "--continuous", "--project", str(proj.root),
                                     "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            server_id = proj.db.server("s").id
            samples: list[float] = []
            end = time.monotonic() + args.seconds
            while time.monotonic() < end:
                time.sleep(1.0)
                with proj.db.unit() as u:
                    rps = u.points.for_server(server_id)
                    started = {c.number: c.started for c in u.cycles.for_server(server_id)}
                if rps and rps[-1].number in started:
                    samples.append(time.time() - started[rps[-1].number])
            cycles = len(proj.db.cycles(server_id, ("committed", "applied")))
            proj.close()
        finally:
            if writer is not None:
                writer.kill()
                writer.wait()
            if loop is not None:
                loop.send_signal(signal.SIGTERM)
                try:
                    loop.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    loop.kill()
            daemon.kill()
    row = {"store": args.store, "seconds": args.seconds, "rate_mbps": args.rate_mbps, "cycles": cycles,
           "samples": len(samples),
           "p50": round(_quantile(samples, 0.5), 2), "p99": round(_quantile(samples, 0.99), 2),
           "max": round(max(samples), 2)}
    if args.json:
        print(json.dumps(row))
        return
    print(f"{size / (1 << 30):.1f} GiB qcow2, {args.rate_mbps} MB/s of random 4-64 KiB writes for {args.seconds} s, "
          f"{args.store} store: {cycles} cycles")
    print(f"RPO p50 {row['p50']:.1f} s, p99 {row['p99']:.1f} s, max {row['max']:.1f} s")


if __name__ == "__main__":
    main()
