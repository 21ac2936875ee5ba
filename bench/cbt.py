"""Changed-block tracking on a live disk: the ``bitmap`` tracker against ``scan``.

A 2 GiB qcow2 (60% data, bench/benchimage.py) is served by a real qemu-storage-daemon; two
projects replicate it, one with each tracker, both through the fleecing export. After both
initial cycles, 1% of the image is rewritten in random 64 KiB guest writes (through the daemon's
NBD export, so the dirty bitmap sees them); then each project runs its delta cycle. Printed per
tracker: the delta cycle's wall seconds and bytes read, and their ratios to the change. With
``--rounds N`` (default 3) the change and both delta cycles are repeated N times and the median
is printed (the machine is shared: one run is noise). For the bitmap cycle it also prints the QMP
round trips and connections and the seconds spent waiting for QEMU, and the engine's stage timers.

    .venv/bin/python bench/cbt.py [--size-gib 2] [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchimage import MIB, log, make_image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.qemu_daemon import QemuDaemon  # noqa: E402

from godwit.engine.cycle import run_cycle  # noqa: E402
from godwit.engine.inventory import add_server  # noqa: E402
from godwit.project.project import init  # noqa: E402
from godwit.sources.qmp import QmpSession  # noqa: E402
from godwit.trackers import BitmapTracker, ChangeTracker, ScanTracker  # noqa: E402

WRITE = 64 << 10


class QmpMeter:
    """Counts QMP connections and round trips, and the seconds spent waiting for them."""

    def __init__(self) -> None:
        self.connections = self.trips = 0
        self.seconds = 0.0
        sync, init_ = QmpSession._sync, QmpSession.__init__
        meter = self

        def timed(session: QmpSession, coro: object, timeout: float) -> object:
            t0 = time.perf_counter()
            try:
                return sync(session, coro, timeout)  # type: ignore[arg-type]
            finally:
                meter.seconds += time.perf_counter() - t0
                meter.trips += 1

        def counted(session: QmpSession, path: Path) -> None:
            meter.connections += 1
            init_(session, path)

        QmpSession._sync = timed  # type: ignore[method-assign,assignment]
        QmpSession.__init__ = counted  # type: ignore[method-assign]

    def reset(self) -> None:
        self.connections = self.trips = 0
        self.seconds = 0.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    size = int(args.size_gib * 1024) * MIB
    with tempfile.TemporaryDirectory(prefix="godwit-cbt-") as tmp:
        root = Path(tmp)
        raw = root / "image.raw"
        make_image(raw, size, seed=1)
        qcow = root / "disk.qcow2"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow)], check=True)
        raw.unlink()
        daemon = QemuDaemon(root / "qsd", fmt="qcow2", image=qcow, fleece_dir=root / "fleece").start()
        try:
            trackers: dict[str, ChangeTracker] = {"bitmap": BitmapTracker(), "scan": ScanTracker()}
            projects = {}
            for name, tracker in trackers.items():
                p = init(root / name)
                add_server(p, "s", [daemon.spec])
                p.db.set_server_state(p.db.server("s").id, "replicating")
                t0 = time.perf_counter()
                run_cycle(p, "s", tracker=tracker)
                log(f"{name}: initial cycle {time.perf_counter() - t0:.1f} s")
                projects[name] = p
            rng = random.Random(2)
            meter = QmpMeter()
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in trackers}
            for _ in range(args.rounds):
                changed = set()
                for _ in range(round(size * 0.01 / WRITE)):
                    slot = rng.randrange(size // WRITE)
                    changed.add(slot)
                    daemon.write(slot * WRITE, rng.randbytes(WRITE))
                daemon.close_guest()
                change = len(changed) * WRITE
                for name, tracker in trackers.items():
                    meter.reset()
                    t0 = time.perf_counter()
                    res = run_cycle(projects[name], "s", tracker=tracker)
                    secs = time.perf_counter() - t0
                    runs[name].append({"seconds": secs, "bytes_read": res.bytes_read, "change": change,
                                       "bytes_changed": res.bytes_changed, "qmp_trips": meter.trips,
                                       "qmp_connections": meter.connections, "qmp_seconds": meter.seconds,
                                       "t_read": res.t_read, "t_cpu": res.t_cpu, "t_upload": res.t_upload})
            rows = {}
            for name, got in runs.items():
                med = {k: statistics.median(r[k] for r in got) for k in got[0]}
                rows[name] = {"seconds": round(med["seconds"], 3), "all_seconds": [round(r["seconds"], 3) for r in got],
                              "bytes_read": int(med["bytes_read"]),
                              "read_per_change": round(med["bytes_read"] / med["change"], 3),
                              "bytes_changed": int(med["bytes_changed"]), "qmp_trips": int(med["qmp_trips"]),
                              "qmp_connections": int(med["qmp_connections"]),
                              "qmp_ms": round(med["qmp_seconds"] * 1000, 1),
                              "stage_ms": {k: round(med[k] * 1000, 1) for k in ("t_read", "t_cpu", "t_upload")}}
                change = int(med["change"])
            for p in projects.values():
                p.close()
        finally:
            daemon.kill()
    speedup = rows["scan"]["seconds"] / max(rows["bitmap"]["seconds"], 1e-9)
    if args.json:
        print(json.dumps({"size": size, "change": change, "trackers": rows, "speedup": round(speedup, 1)}))
        return
    print(f"{size / (1 << 30):.1f} GiB qcow2, 60% data; change: {change / MIB:.1f} MiB in 64 KiB random writes")
    print(f"median of {args.rounds} rounds")
    print(f"{'tracker':8} {'delta s':>8} {'read MiB':>9} {'read/change':>12} {'QMP trips':>10} {'QMP ms':>7}  all s")
    for name, r in rows.items():
        print(f"{name:8} {r['seconds']:8.3f} {r['bytes_read'] / MIB:9.1f} {r['read_per_change']:12.2f} "
              f"{r['qmp_trips']:10d} {r['qmp_ms']:7.1f}  {r['all_seconds']}")
    b = rows["bitmap"]
    print(f"bitmap cycle: {b['qmp_connections']} QMP connection(s); stage timers (summed over threads) "
          f"read {b['stage_ms']['t_read']} ms, cpu {b['stage_ms']['t_cpu']} ms, upload {b['stage_ms']['t_upload']} ms")
    print(f"bitmap delta cycle is {speedup:.1f}x faster than scan")


if __name__ == "__main__":
    main()
