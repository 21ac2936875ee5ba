"""Changed-block tracking on a live disk: the ``bitmap`` tracker against ``scan``.

A 2 GiB qcow2 (60% data, bench/benchimage.py) is served by a real qemu-storage-daemon; two
projects replicate it, one with each tracker, both through the fleecing export. After both
initial cycles, 1% of the image is rewritten in random 64 KiB guest writes (through the daemon's
NBD export, so the dirty bitmap sees them); then each project runs its delta cycle. Printed per
tracker: the delta cycle's wall seconds and bytes read, and their ratios to the change.

    .venv/bin/python bench/cbt.py [--size-gib 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import random
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
from godwit.trackers import BitmapTracker, ChangeTracker, ScanTracker  # noqa: E402

WRITE = 64 << 10


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gib", type=float, default=2.0)
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
            changed = set()
            for _ in range(round(size * 0.01 / WRITE)):
                slot = rng.randrange(size // WRITE)
                changed.add(slot)
                daemon.write(slot * WRITE, rng.randbytes(WRITE))
            daemon.close_guest()
            change = len(changed) * WRITE
            rows = {}
            for name, tracker in trackers.items():
                t0 = time.perf_counter()
                import cProfile, pstats; pr = cProfile.Profile(); pr.enable(); res = run_cycle(projects[name], "s", tracker=tracker); pr.disable(); None
                secs = time.perf_counter() - t0; print(name, "read", res.t_read, "cpu", res.t_cpu, "upload", res.t_upload, "wall", res.t_wall)
                rows[name] = {"seconds": round(secs, 3), "bytes_read": res.bytes_read,
                              "read_per_change": round(res.bytes_read / change, 3),
                              "bytes_changed": res.bytes_changed}
                projects[name].close()
        finally:
            daemon.kill()
    speedup = rows["scan"]["seconds"] / max(rows["bitmap"]["seconds"], 1e-9)
    if args.json:
        print(json.dumps({"size": size, "change": change, "trackers": rows, "speedup": round(speedup, 1)}))
        return
    print(f"{size / (1 << 30):.1f} GiB qcow2, 60% data; change: {change / MIB:.1f} MiB in 64 KiB random writes")
    print(f"{'tracker':8} {'delta s':>8} {'read MiB':>9} {'read/change':>12}")
    for name, r in rows.items():
        print(f"{name:8} {r['seconds']:8.2f} {r['bytes_read'] / MIB:9.1f} {r['read_per_change']:12.2f}")
    print(f"bitmap delta cycle is {speedup:.1f}x faster than scan")


if __name__ == "__main__":
    main()
