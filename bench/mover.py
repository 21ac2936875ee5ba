"""Mover benchmark: apply MB/s of the 2 GiB image's initial cycle, next to the raw write speed
of the same disk (dd conv=fdatasync), measured in the same run. Prints figures; not a test.

    .venv/bin/python bench/mover.py [--size-gib 2] [--workdir DIR] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchimage import MIB, make_image

MiB = MIB


def dd_write(path: Path, size: int) -> float:
    t0 = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={path}", "bs=4M", f"count={size // (4 * MiB)}", "conv=fdatasync",
                    "status=none"], check=True)
    return size / (time.perf_counter() - t0) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-gib", type=float, default=2.0)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from godwit.engine import lifecycle as replication
    from godwit.engine.inventory import add_server
    from godwit.engine.mover import apply_server
    from godwit.project.project import init

    work = Path(tempfile.mkdtemp(prefix="godwit-bench-mover-", dir=args.workdir or "/var/tmp"))
    size = int(args.size_gib * (1 << 30)) // MiB * MiB
    try:
        img = work / "disk.raw"
        data_bytes = make_image(img, size, 1234)
        project = init(work / "proj")
        add_server(project, "bench", [str(img)])
        replication.start(project, "bench")
        dd_file = project.replicas_dir / "dd.img"
        project.replicas_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["sync"], check=False)
        dd_mbps = dd_write(dd_file, size)
        dd_data_mbps = dd_write(dd_file.with_suffix(".2"), data_bytes // (4 * MiB) * 4 * MiB)
        dd_file.unlink()
        dd_file.with_suffix(".2").unlink()
        subprocess.run(["sync"], check=False)
        t0 = time.perf_counter()
        results = apply_server(project, "bench")
        seconds = time.perf_counter() - t0
        project.close()
        apply_mbps = size / seconds / 1e6
        apply_data_mbps = data_bytes / seconds / 1e6
        ratio = round(apply_data_mbps / dd_data_mbps, 3)
        figures: dict[str, object] = {
            "image_bytes": size, "data_bytes": data_bytes, "cycles_applied": len(results),
            "apply_seconds": round(seconds, 3),
            "apply_mb_s_disk": round(apply_mbps, 1), "apply_mb_s_data": round(apply_data_mbps, 1),
            "dd_fdatasync_mb_s_disk_size": round(dd_mbps, 1), "dd_fdatasync_mb_s_data_size": round(dd_data_mbps, 1),
            "ratio_data": ratio,
            "target": "apply >= 60% of dd (data bytes against dd of the same number of bytes)",
        }
        figures["verdict"] = "PASS" if ratio >= 0.6 else "FAIL"
        if args.json:
            print(json.dumps(figures, indent=2))
        else:
            print(f"mover benchmark, {size / (1 << 30):.1f} GiB image ({data_bytes / (1 << 30):.2f} GiB data), "
                  f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, workdir {work}")
            for k, v in figures.items():
                print(f"  {k:32} {v}")
        return 0
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
