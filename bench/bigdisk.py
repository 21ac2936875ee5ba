"""Memory and state of a 2 TiB sparse disk: a cycle's memory must not grow with the disk's size.

A 2 TiB sparse raw file (``truncate``) holds 1 GiB of incompressible data in 8 places spread over
the disk. One project replicates it: the initial cycle, then 16 MiB of it is rewritten and one
place's first 8 MiB is punched out, then a delta cycle (scan tracker). Each cycle runs in a child
process of its own, started by a small middle process that reports
``getrusage(RUSAGE_CHILDREN).ru_maxrss``: the peak RSS of that cycle alone.

Printed: each cycle's peak RSS and wall seconds, and the state: the bytes of the disk's block-hash
files on disk, against the hashes of its allocated data (16 bytes per 64 KiB block of data).
Targets: delta RSS <= 200 MB; state <= 4x the hashes of the allocated data.

    .venv/bin/python bench/bigdisk.py [--data-mib 1024] [--size-tib 2] [--json]

``measure(tmp)`` is the library entry (bench/appliance.py and tests/integration/test_bigdisk.py
call it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import blake3

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
BLOCK = 64 << 10
DIGEST = 16
PLACES = 8
RSS_TARGET = 200 * 10**6
STATE_FACTOR = 4

# The middle process: runs one cycle in a grandchild and reports only that one's peak RSS
# (RUSAGE_CHILDREN of a process with no other children).
_MIDDLE = """
import resource, subprocess, sys, time
t0 = time.perf_counter()
subprocess.run([sys.executable, "-c", sys.argv[1], *sys.argv[2:]], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024, time.perf_counter() - t0)
"""
_CYCLE = """
import sys
from pathlib import Path
from godwit.engine import lifecycle
from godwit.project.project import open_project
p = open_project(Path(sys.argv[1]))
try:
    (lifecycle.start if sys.argv[2] == "initial" else lifecycle.cycle)(p, "big")
finally:
    p.close()
"""


def _fill(f: int, offset: int, n: int, seed: str) -> None:
    """Write ``n`` incompressible bytes at ``offset`` (blake3 XOF, 8 MiB at a time)."""
    xof = blake3.blake3(seed.encode())
    done = 0
    while done < n:
        k = min(8 * MIB, n - done)
        os.pwrite(f, xof.digest(k, seek=done), offset + done)
        done += k


def _run_cycle(root: Path, which: str) -> tuple[int, float]:
    """(peak RSS in bytes, wall seconds) of one cycle in its own process."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _MIDDLE, _CYCLE, str(root), which], check=True,
                         capture_output=True, text=True, env=env).stdout.split()
    return int(out[0]), float(out[1])


def hash_bytes(root: Path) -> tuple[int, int]:
    """(files, bytes on disk) under the project's block-hash folder."""
    files = [p for p in (root / "state" / "hashes").rglob("*") if p.is_file() and p.suffix in (".bin", ".tmp")]
    return len(files), sum(p.stat().st_blocks * 512 for p in files)


def measure(tmp: Path, *, data_bytes: int = 1 << 30, size: int = 2 << 40) -> dict[str, object]:
    """Replicate a sparse disk of ``size`` holding ``data_bytes`` in a new project under ``tmp``;
    return its cycles' peak RSS and seconds and its state's size, with the targets."""
    from godwit.engine.inventory import add_server
    from godwit.project.project import init

    root = tmp / "bigdisk"
    disk = tmp / "bigdisk.raw"
    piece = data_bytes // PLACES // BLOCK * BLOCK
    stride = size // PLACES // BLOCK * BLOCK
    fd = os.open(disk, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.ftruncate(fd, size)
        for i in range(PLACES):
            _fill(fd, i * stride + stride // 3, piece, f"bigdisk/{i}")
    finally:
        os.close(fd)
    project = init(root, "bigdisk")
    try:
        add_server(project, "big", [str(disk)])
    finally:
        project.close()
    initial_rss, initial_s = _run_cycle(root, "initial")
    fd = os.open(disk, os.O_RDWR)
    try:
        _fill(fd, stride // 3 + piece // 2, 16 * MIB, "bigdisk/delta")  # a change inside place 0
        os.fsync(fd)
        subprocess.run(["fallocate", "--punch-hole", "--offset", str(stride + stride // 3), "--length",
                        str(8 * MIB), str(disk)], check=True)
    finally:
        os.close(fd)
    delta_rss, delta_s = _run_cycle(root, "delta")
    files, state = hash_bytes(root)
    allocated = os.stat(disk).st_blocks * 512
    hashes_of_data = allocated // BLOCK * DIGEST
    disk.unlink()
    return {
        "disk_size": size, "data_bytes": allocated,
        "initial_rss": initial_rss, "initial_seconds": round(initial_s, 2),
        "delta_rss": delta_rss, "delta_seconds": round(delta_s, 2),
        "hash_files": files, "state_bytes": state, "hashes_of_data": hashes_of_data,
        "state_ratio": round(state / hashes_of_data, 2),
        "rss_target": RSS_TARGET, "state_target": STATE_FACTOR * hashes_of_data,
        "ok": delta_rss <= RSS_TARGET and state <= STATE_FACTOR * hashes_of_data,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-mib", type=int, default=1024)
    ap.add_argument("--size-tib", type=float, default=2.0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="godwit-bigdisk-") as tmp:
        r = measure(Path(tmp), data_bytes=args.data_mib * MIB, size=int(args.size_tib * (1 << 40)))
    if args.json:
        print(json.dumps(r, indent=2))
        return
    mb = 10**6
    print(f"disk {r['disk_size'] / (1 << 40):.1f} TiB sparse, {r['data_bytes'] / MIB:.0f} MiB of data "
          f"({time.perf_counter() - t0:.0f} s in all)")
    print(f"initial cycle: peak RSS {r['initial_rss'] / mb:.0f} MB, {r['initial_seconds']} s")
    print(f"delta cycle:   peak RSS {r['delta_rss'] / mb:.0f} MB, {r['delta_seconds']} s "
          f"(target <= {RSS_TARGET / mb:.0f} MB)")
    print(f"state: {r['hash_files']} block-hash files, {r['state_bytes'] / 1024:.0f} KiB on disk; hashes of the "
          f"data {r['hashes_of_data'] / 1024:.0f} KiB, ratio {r['state_ratio']} (target <= {STATE_FACTOR})")
    print("targets met" if r["ok"] else "TARGET MISSED")


if __name__ == "__main__":
    main()
