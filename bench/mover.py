"""Mover benchmark: apply MB/s of data against the rate of the initial cycle that wrote the same
bytes into the local cache, on the same disk, in one run. Prints figures; not a test.

1. a sparse raw image (default 8 GiB, 60% data: ~4.8 GiB, ``bench/benchimage.py``);
2. godwit's initial cycle of it into the project's local cache (``lifecycle.start``), timed;
3. the mover applying that cycle onto a local replica (``mover.apply_server``: fetch and verify
   every pack, write the sparse replica, fsync, seal and record recovery point 1, then release the
   cache behind it), timed twice: until the point is recorded (``mover_seconds``, the apply rate
   and the ratio's figure) and until ``apply_server`` returns with the cache released
   (``mover_released_seconds``, ``ratio_released``);
4. optionally the same initial cycle into a second project with the image evicted from the page
   cache first (so that it reads the disk as the mover does), timed;
5. optionally (``--delta``) a delta cycle's apply onto a replica whose old data is cold: 800 MiB
   rewritten in scattered 1 MiB pieces of a 4 GiB image (the undo journal reads the old bytes);
6. optionally (``--dd``) ``dd if=/dev/zero bs=4M conv=fdatasync`` of the data's size beside it.

Both rates are MB/s (10**6 bytes per second) of *data* bytes. Target: mover ≥ 1.0× the cycle.

    .venv/bin/python bench/mover.py [--size-gib 8] [--workdir DIR] [--dd] [--no-cold-source]
        [--settle S] [--delta] [--json]

``measure_vs_initial(tmp)`` is the same measurement as a function (bench/appliance.py uses it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchimage import MIB, log, make_image

MiB = MIB
GIB = 1 << 30
TARGET_RATIO = 1.0
SETTLE_SECONDS = 20.0


def dd_write(path: Path, size: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={size // (4 * MiB)}", "conv=fdatasync",
                    "status=none"], check=True)
    return size / (time.perf_counter() - t0) / 1e6


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _evict(path: Path) -> None:
    """Drop one file's clean pages from the page cache (only that file: the machine is shared)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def _initial_cycle(work: Path, img: Path, name: str) -> tuple[Any, float]:
    from godwit.engine import lifecycle as replication
    from godwit.engine.inventory import add_server
    from godwit.project.project import init

    project = init(work / name)
    add_server(project, "bench", [str(img)])
    subprocess.run(["sync"], check=False)
    t0 = time.perf_counter()
    replication.start(project, "bench")
    return project, time.perf_counter() - t0


def _settle(seconds: float) -> None:
    """Let the disk finish what earlier steps wrote (here a virtio disk whose host absorbs bursts
    and flushes them later): each timed step then starts on an idle disk."""
    subprocess.run(["sync"], check=False)
    time.sleep(seconds)


def measure_vs_initial(tmp: Path, *, size: int = 8 * GIB, seed: int = 1234, cold_source: bool = True,
                       dd: bool = False, settle: float = SETTLE_SECONDS) -> dict[str, Any]:
    """In ``tmp`` (one filesystem): the initial cycle of a ``size`` disk (60% data) into a local
    cache, then the mover applying it onto a local replica; both as MB/s of data, and their ratio.

    The image is made just before, so the initial cycle reads it from the page cache (as the issue
    measured), while the mover has to read its packs from the disk (the local store writes them
    around the page cache). With ``cold_source`` a second initial cycle, into a second project,
    first evicts the image from the page cache: it then reads and writes the same disk as the
    mover does (``ratio_cold_source``). Removes everything it made; needs ~3.4× the data free."""
    from godwit.engine.mover import apply_server

    size = size // MiB * MiB
    work = Path(tempfile.mkdtemp(prefix="godwit-bench-mover-", dir=tmp))
    try:
        need = int(size * 0.6 * (3.4 if cold_source else 2.3))
        if _free_bytes(work) < need:
            raise RuntimeError(f"{work} has {_free_bytes(work) >> 20} MiB free; this run needs {need >> 20} MiB")
        img = work / "disk.raw"
        log(f"making a {size / GIB:.1f} GiB image")
        data_bytes = make_image(img, size, seed)
        _settle(settle)
        log("initial cycle (source in the page cache)")
        project, cycle_s = _initial_cycle(work, img, "proj")
        figures: dict[str, Any] = {"image_bytes": size, "data_bytes": data_bytes}
        try:
            _settle(settle)
            log("mover")
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            wall0, t0 = time.time(), time.perf_counter()
            results = apply_server(project, "bench")
            released_s = time.perf_counter() - t0
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            # Until recovery point 1 is sealed and recorded (the apply), read from the state as any
            # godwit's code records it (so main's code, measured by this script, gives it too).
            point = project.db.recovery_points(project.db.server("bench").id)[-1]
            mover_s = point.sealed - wall0
        finally:
            project.close()
        if cold_source:  # after the mover, so that deleting its 5 GB of packs cannot slow the mover
            _evict(img)
            _settle(settle)
            log("initial cycle (source evicted from the page cache), into a second project")
            other, cold_s = _initial_cycle(work, img, "proj-cold")
            other.close()
        figures.update({
            "cycles_applied": len(results),
            "initial_cycle_seconds": round(cycle_s, 3),
            "initial_cycle_mb_s_data": round(data_bytes / cycle_s / 1e6, 1),
            "mover_seconds": round(mover_s, 3),
            "mover_cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 2),
            "mover_mb_s_data": round(data_bytes / mover_s / 1e6, 1),
            "mover_released_seconds": round(released_s, 3),
            "mover_released_mb_s_data": round(data_bytes / released_s / 1e6, 1),
            "ratio": round(cycle_s / mover_s, 3),
            "ratio_released": round(cycle_s / released_s, 3),
            "ratio_uses": "mover_seconds: until recovery point 1 is sealed and recorded (the cache is "
                          "released behind it; ratio_released counts until that is done too)",
        })
        if cold_source:
            figures.update({
                "initial_cycle_cold_source_seconds": round(cold_s, 3),
                "initial_cycle_cold_source_mb_s_data": round(data_bytes / cold_s / 1e6, 1),
                "ratio_cold_source": round(cold_s / mover_s, 3),
            })
        if dd:
            shutil.rmtree(work / "proj", ignore_errors=True)
            n = data_bytes // (4 * MiB) * 4 * MiB
            figures["dd_fdatasync_mb_s_data_size"] = round(dd_write(work / "dd.img", n), 1)
        figures["target"] = f"mover >= {TARGET_RATIO}x the initial cycle (MB/s of data)"
        figures["verdict"] = "PASS" if figures["ratio"] >= TARGET_RATIO else "FAIL"
        return figures
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure_delta(tmp: Path, *, size: int = 4 * GIB, change: int = 800 * MiB, seed: int = 7,
                  settle: float = 10.0) -> dict[str, Any]:
    """A delta cycle's apply, where the undo journal matters: a ``size`` image (60% data) replicated
    and applied, then ``change`` bytes rewritten in scattered 1 MiB pieces, a delta cycle, the
    replica evicted from the page cache (its old data is cold, as in an appliance), and the mover
    applying the delta (undo journal of the old bytes, writes, seal, release), timed."""
    import random

    from godwit.engine import lifecycle as replication
    from godwit.engine.mover import apply_server

    work = Path(tempfile.mkdtemp(prefix="godwit-bench-mover-delta-", dir=tmp))
    try:
        img = work / "disk.raw"
        make_image(img, size, seed)
        project, _ = _initial_cycle(work, img, "proj")
        try:
            apply_server(project, "bench")
            rng = random.Random(seed)
            fd = os.open(img, os.O_WRONLY)
            try:
                for _ in range(change // MiB):
                    os.pwrite(fd, os.urandom(MiB), rng.randrange(size // MiB) * MiB)
                os.fsync(fd)
            finally:
                os.close(fd)
            replication.cycle(project, "bench")
            for f in project.replicas_dir.rglob("*.img"):
                _evict(f)
            _settle(settle)
            t0 = time.perf_counter()
            apply_server(project, "bench")
            seconds = time.perf_counter() - t0
        finally:
            project.close()
        return {"delta_bytes": change, "delta_apply_seconds": round(seconds, 3),
                "delta_apply_mb_s": round(change / seconds / 1e6, 1)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=8.0)
    ap.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    ap.add_argument("--dd", action="store_true", help="also time dd conv=fdatasync of the data's size")
    ap.add_argument("--no-cold-source", action="store_true", help="skip the initial cycle from a cold source")
    ap.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                    help="seconds of quiet (after sync) before each timed step")
    ap.add_argument("--delta", action="store_true", help="also time a delta cycle's apply (undo journal)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    figures = measure_vs_initial(args.workdir, size=int(args.size_gib * GIB), dd=args.dd,
                                 cold_source=not args.no_cold_source, settle=args.settle)
    if args.delta:
        figures.update(measure_delta(args.workdir))
    figures["load_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"mover vs initial cycle, {args.size_gib:.1f} GiB image ({figures['data_bytes'] / GIB:.2f} GiB data), "
              f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, workdir {args.workdir}")
        for k, v in figures.items():
            print(f"  {k:32} {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
