"""Replication benchmark: godwit's initial and delta cycles against cp, a full read and rsync.

Prints figures, not a verdict on correctness (that is the tests' job). Everything happens in one
work folder on one filesystem, with a warm page cache:

1. a raw image (default 2 GiB): 60% random data in 1 MiB extents, 40% holes, fixed seed;
2. ``cp --sparse=always`` of the image into the project's cache folder, alone and followed by
   ``sync FILE`` (godwit's local store fsyncs every pack: the second is the like-for-like one);
3. one full read of the image: ``cat IMAGE > /dev/null`` and a Python ``preadv`` loop into a
   page-aligned 4 MiB buffer;
4. godwit's initial cycle (``godwit.engine.lifecycle.start``) through the Python API;
5. 1% of the image rewritten in scattered 64 KiB writes (fixed seed), then a delta cycle
   (``godwit.engine.lifecycle.cycle``) and ``rsync --inplace --no-whole-file --ignore-times`` of the
   same change onto a copy of the image taken before the writes.

MB/s is 10**6 bytes per second of *image size* (the virtual size, holes included) over wall seconds.

    .venv/bin/python bench/replicate.py [--size-gib 2] [--workdir DIR] [--keep] [--json]
        [--seed 1234] [--repeat 3] [--write-align-kib 64]

The machine's load average is printed before and after: on a busy 2-core machine the cycle figures
move by 2-3x, so compare only quiet runs. Results and their reading: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import mmap
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3
from benchimage import EXTENT, MIB, key, log, make_image

GIB = 1 << 30
WRITE = 64 << 10  # size of one scattered write of the delta
READ_BUF = 4 * MIB
SERVER = "bench"

# Targets from the issue.
TARGET_INITIAL_VS_CP = 0.70  # initial cycle MB/s >= 70% of cp's
TARGET_DELTA_VS_READ = 2.0  # delta cycle seconds <= 2x one full read
TARGET_STORED_VS_CHANGED = 1.1  # bytes stored for the delta <= 1.1x the changed bytes


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime




def apply_writes(path: Path, size: int, seed: int, fraction: float = 0.01, align: int = WRITE) -> tuple[int, int]:
    """Rewrite ``fraction`` of the image in scattered writes of WRITE bytes at ``align``-aligned offsets.

    The writes start in distinct WRITE-sized slots; with ``align`` < WRITE each is shifted inside its
    slot, so it usually straddles two blocks. Returns (number of writes, sum of their sizes). The
    writes land anywhere: on data and in holes.
    """
    count = max(1, round(size * fraction / WRITE))
    rng = random.Random(seed + 1)
    slots = rng.sample(range(size // WRITE), count)
    k = key(seed, "delta")
    fd = os.open(path, os.O_WRONLY)
    try:
        for s in slots:
            shift = rng.randrange(0, WRITE, align) if align < WRITE else 0
            if (s + 1) * WRITE + shift > size:
                shift = 0
            os.pwrite(fd, blake3.blake3(s.to_bytes(8, "little"), key=k).digest(length=WRITE), s * WRITE + shift)
        os.fsync(fd)
    finally:
        os.close(fd)
    return count, count * WRITE


# -- peers -----------------------------------------------------------------------------------


def run_timed(argv: list[str], *, stdout: int | None = subprocess.DEVNULL) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return seconds, proc.stdout if isinstance(proc.stdout, str) else ""


def python_read(path: Path) -> float:
    """Seconds to read every byte of ``path`` (holes included) with preadv into an aligned buffer."""
    buf = mmap.mmap(-1, READ_BUF)
    view = memoryview(buf)
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        t0 = time.perf_counter()
        pos = 0
        while pos < size:
            n = os.preadv(fd, [view[:min(READ_BUF, size - pos)]], pos)
            if n <= 0:
                break
            pos += n
        return time.perf_counter() - t0
    finally:
        os.close(fd)
        view.release()
        buf.close()


def cp_once(image: Path, dest: Path, *, sync: bool, cpu: list[float]) -> float:
    """Seconds of one cp (and sync of the copy); appends the CPU seconds of cp and sync to ``cpu``."""
    dest.unlink(missing_ok=True)
    c0 = cpu_seconds(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    run_timed(["cp", "--sparse=always", str(image), str(dest)])
    if sync:
        run_timed(["sync", str(dest)])  # fsync of that one file, not of the whole system
    seconds = time.perf_counter() - t0
    cpu.append(cpu_seconds(resource.RUSAGE_CHILDREN) - c0)
    dest.unlink()
    return seconds


def rsync_delta(image: Path, dest: Path) -> tuple[float, int | None]:
    """Seconds of ``rsync --inplace --no-whole-file`` and its literal (sent) data bytes if reported."""
    # --ignore-times: the destination was copied seconds before the writes; rsync's size+mtime quick
    # check could call the files equal and send nothing.
    seconds, out = run_timed(["rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", str(image),
                              str(dest)], stdout=subprocess.PIPE)
    literal = None
    for line in out.splitlines():
        if line.strip().startswith("Literal data:"):
            digits = "".join(ch for ch in line.split(":", 1)[1].split("bytes")[0] if ch.isdigit())
            literal = int(digits) if digits else None
    return seconds, literal


# -- godwit ----------------------------------------------------------------------------------


def tree_sizes(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = p.stat().st_size
    return out


def cycle_figures(res: Any, seconds: float, cpu: float, size: int) -> dict[str, Any]:
    return {
        "seconds": seconds, "mb_s": size / seconds / 1e6, "cpu": cpu, "kind": res.kind, "number": res.number,
        "bytes_read": res.bytes_read, "bytes_changed": res.bytes_changed, "bytes_sent": res.bytes_sent,
        "packs": res.packs_uploaded, "t_read": res.t_read, "t_cpu": res.t_cpu, "t_upload": res.t_upload,
        "t_throttle": res.t_throttle, "t_wall": res.t_wall, "bottleneck": res.bottleneck,
    }


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    measured: str
    target: str
    ok: bool


@dataclass
class Report:
    machine: dict[str, Any]
    params: dict[str, Any]
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)


def machine_info(workdir: Path) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = 0
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    fstype = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        fstype = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "--target", str(workdir)], capture_output=True,
                                text=True, check=True).stdout.strip() or fstype
    import godwit

    return {
        "nproc": os.cpu_count(), "cpu": cpu, "mem_gib": round(mem / GIB, 1), "fs": fstype,
        "workdir": str(workdir), "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "load_before": os.getloadavg()[0], "godwit": str(Path(godwit.__file__).parent),
        "kernel": platform.release(),
    }


def median_of(repeat: int, fn: Callable[[], float]) -> tuple[float, list[float]]:
    runs = [fn() for _ in range(repeat)]
    return statistics.median(runs), runs


def bench(workdir: Path, size: int, seed: int, repeat: int, align: int) -> Report:
    from godwit.engine import inventory
    from godwit.engine import lifecycle as replication
    from godwit.project import project

    image = workdir / "disk.img"
    before = workdir / "disk-before.img"
    report = Report(machine_info(workdir), {"size": size, "seed": seed, "repeat": repeat,
                                            "extent": EXTENT, "write": WRITE, "data_fraction": 0.6,
                                            "delta_fraction": 0.01, "write_align": align})
    fig = report.figures

    log(f"generating a {size / GIB:g} GiB image in {workdir}")
    t0 = time.perf_counter()
    data_bytes = make_image(image, size, seed)
    fig["image"] = {"size": size, "data_bytes": data_bytes, "allocated": os.stat(image).st_blocks * 512,
                    "generate_seconds": time.perf_counter() - t0}

    proj = project.init(workdir / "project", "bench")
    try:
        copy = proj.cache_dir / "copy"
        log("cp --sparse=always (page cache) and cp + sync FILE")
        cp_cpu: list[float] = []
        cps_cpu: list[float] = []
        cp_s, cp_runs = median_of(repeat, lambda: cp_once(image, copy, sync=False, cpu=cp_cpu))
        cps_s, cps_runs = median_of(repeat, lambda: cp_once(image, copy, sync=True, cpu=cps_cpu))
        fig["cp"] = {"seconds": cp_s, "mb_s": size / cp_s / 1e6, "cpu": statistics.median(cp_cpu), "runs": cp_runs}
        fig["cp_sync"] = {"seconds": cps_s, "mb_s": size / cps_s / 1e6, "cpu": statistics.median(cps_cpu),
                          "runs": cps_runs}

        log("one full read (warm cache): cat and a Python preadv loop")
        cat_s, cat_runs = median_of(repeat, lambda: run_timed(["cat", str(image)])[0])
        py_s, py_runs = median_of(repeat, lambda: python_read(image))
        fig["read_cat"] = {"seconds": cat_s, "mb_s": size / cat_s / 1e6, "runs": cat_runs}
        fig["read_python"] = {"seconds": py_s, "mb_s": size / py_s / 1e6, "runs": py_runs}

        log("godwit initial cycle")
        inventory.add_server(proj, SERVER, [str(image)])
        c0, t0 = cpu_seconds(), time.perf_counter()
        res = replication.start(proj, SERVER)
        initial_s, initial_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        if res is None:
            raise RuntimeError("replication.start ran no initial cycle")
        fig["initial"] = cycle_figures(res, initial_s, initial_cpu, size)

        log("copy of the image before the change (rsync's destination)")
        run_timed(["cp", "--sparse=always", str(image), str(before)])
        run_timed(["sync", str(before)])

        log(f"applying 1% scattered 64 KiB writes ({align // 1024} KiB-aligned)")
        count, written = apply_writes(image, size, seed, align=align)
        fig["change"] = {"writes": count, "bytes_written": written}

        log("godwit delta cycle")
        cache_before = tree_sizes(proj.cache_dir)
        c0, t0 = cpu_seconds(), time.perf_counter()
        res = replication.cycle(proj, SERVER)
        delta_s, delta_cpu = time.perf_counter() - t0, cpu_seconds() - c0
        new = {k: v for k, v in tree_sizes(proj.cache_dir).items() if k not in cache_before}
        fig["delta"] = cycle_figures(res, delta_s, delta_cpu, size)
        fig["delta"]["stored"] = sum(new.values())
        fig["delta"]["stored_packs"] = sum(v for k, v in new.items() if k.endswith(".pack"))
        fig["delta"]["stored_manifest"] = sum(v for k, v in new.items() if k.endswith(".manifest"))
        fig["delta"]["objects"] = len(new)

        log("rsync --inplace --no-whole-file of the same change")
        c0 = cpu_seconds(resource.RUSAGE_CHILDREN)
        rs_s, literal = rsync_delta(image, before)
        fig["rsync"] = {"seconds": rs_s, "literal_bytes": literal, "cpu": cpu_seconds(resource.RUSAGE_CHILDREN) - c0}
    finally:
        proj.close()

    ref_read = min(cat_s, py_s)
    ini, dlt = fig["initial"], fig["delta"]
    report.checks = [
        Check("initial cycle >= 70% of cp + sync MB/s", f"{ini['mb_s']:.0f} MB/s",
              f">= {TARGET_INITIAL_VS_CP * fig['cp_sync']['mb_s']:.0f} MB/s",
              ini["mb_s"] >= TARGET_INITIAL_VS_CP * fig["cp_sync"]["mb_s"]),
        Check("initial cycle >= 70% of cp MB/s (no sync)", f"{ini['mb_s']:.0f} MB/s",
              f">= {TARGET_INITIAL_VS_CP * fig['cp']['mb_s']:.0f} MB/s",
              ini["mb_s"] >= TARGET_INITIAL_VS_CP * fig["cp"]["mb_s"]),
        Check("delta cycle within 2x one full read", f"{dlt['seconds']:.2f} s",
              f"<= {TARGET_DELTA_VS_READ * ref_read:.2f} s", dlt["seconds"] <= TARGET_DELTA_VS_READ * ref_read),
        Check("delta cycle faster than rsync", f"{dlt['seconds']:.2f} s", f"< {rs_s:.2f} s", dlt["seconds"] < rs_s),
        Check("delta stored <= 1.1x changed bytes", f"{dlt['stored'] / max(dlt['bytes_changed'], 1):.3f}x",
              f"<= {TARGET_STORED_VS_CHANGED}x", dlt["stored"] <= TARGET_STORED_VS_CHANGED * dlt["bytes_changed"]),
    ]
    fig["read_reference"] = {"seconds": ref_read, "which": "cat" if cat_s <= py_s else "python"}
    report.machine["load_after"] = os.getloadavg()[0]
    return report


# -- output ----------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / MIB:.2f} MiB"


def render(r: Report) -> str:
    m, f = r.machine, r.figures
    size = f["image"]["size"]
    ini, dlt = f["initial"], f["delta"]
    rows: list[tuple[str, str]] = [
        ("image", f"{size / GIB:g} GiB, {_mib(f['image']['data_bytes'])} data in 1 MiB extents, rest holes"),
        ("cp --sparse=always (page cache)",
         f"{f['cp']['seconds']:.2f} s  {f['cp']['mb_s']:.0f} MB/s  cpu {f['cp']['cpu']:.2f} s"),
        ("cp --sparse=always + sync FILE",
         f"{f['cp_sync']['seconds']:.2f} s  {f['cp_sync']['mb_s']:.0f} MB/s  cpu {f['cp_sync']['cpu']:.2f} s"),
        ("full read, cat (warm)", f"{f['read_cat']['seconds']:.2f} s  {f['read_cat']['mb_s']:.0f} MB/s"),
        ("full read, Python preadv 4 MiB aligned (warm)",
         f"{f['read_python']['seconds']:.2f} s  {f['read_python']['mb_s']:.0f} MB/s"),
        ("godwit initial cycle", f"{ini['seconds']:.2f} s  {ini['mb_s']:.0f} MB/s  cpu {ini['cpu']:.2f} s  "
                                 f"({_mib(ini['bytes_sent'])} stored in {ini['packs']} packs)"),
        ("  stages (sums over threads)", f"read {ini['t_read']:.2f} s  cpu {ini['t_cpu']:.2f} s  "
                                         f"upload {ini['t_upload']:.2f} s  -> {ini['bottleneck']}"),
        ("change", f"{f['change']['writes']} writes of 64 KiB, {r.params['write_align'] // 1024} KiB-aligned = "
                   f"{_mib(f['change']['bytes_written'])} written"),
        ("godwit delta cycle", f"{dlt['seconds']:.2f} s  cpu {dlt['cpu']:.2f} s  changed {_mib(dlt['bytes_changed'])}  "
                               f"stored {_mib(dlt['stored'])} ({_mib(dlt['stored_packs'])} packs + "
                               f"{dlt['stored_manifest'] / 1024:.1f} KiB manifest, {dlt['objects']} objects)"),
        ("  stages (sums over threads)", f"read {dlt['t_read']:.2f} s  cpu {dlt['t_cpu']:.2f} s  "
                                         f"upload {dlt['t_upload']:.2f} s  -> {dlt['bottleneck']}"),
        ("rsync --inplace --no-whole-file -I", f"{f['rsync']['seconds']:.2f} s  cpu {f['rsync']['cpu']:.2f} s" + (
            f"  literal data {_mib(f['rsync']['literal_bytes'])}" if f["rsync"]["literal_bytes"] is not None else "")),
    ]
    w = max(len(a) for a, _ in rows)
    out = [f"machine: {m['nproc']} x {m['cpu']}, {m['mem_gib']} GiB RAM, {m['fs']} at {m['workdir']}, "
           f"Python {m['python']}, {m['date']} (load {m['load_before']:.2f} before, {m['load_after']:.2f} after)",
           f"godwit: {m['godwit']}", ""]
    out += [f"{a:<{w}}  {b}" for a, b in rows]
    out += ["", f"{'target':<42} {'measured':>12} {'target':>14}  verdict"]
    out += [f"{c.name:<42} {c.measured:>12} {c.target:>14}  {'PASS' if c.ok else 'FAIL'}" for c in r.checks]
    out.append(f"(one full read = the faster of cat and Python: {f['read_reference']['which']}; "
               f"MB/s = 10^6 bytes of image size per wall second; repeat {r.params['repeat']}, median)")
    return "\n".join(out)


@contextlib.contextmanager
def work_folder(arg: str | None, keep: bool) -> Iterator[Path]:
    if arg is None:
        path, created = Path(tempfile.mkdtemp(prefix="godwit-bench-", dir="/var/tmp")), True
    else:
        path = Path(arg).resolve()
        created = not path.exists()
        path.mkdir(parents=True, exist_ok=True)
        if any(path.iterdir()):
            raise SystemExit(f"--workdir {path} is not empty; give an empty or new folder")
    try:
        yield path
    finally:
        if keep:
            log(f"kept {path}")
        elif created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                if child.is_dir():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-gib", type=float, default=2.0, help="image size in GiB (default 2)")
    ap.add_argument("--workdir", help="an empty or new folder for everything (default: a temp dir in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON instead of a table")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--repeat", type=int, default=3, help="runs of cp, cp + sync and the reads (median)")
    ap.add_argument("--write-align-kib", type=int, default=64, choices=[4, 8, 16, 32, 64],
                    help="alignment of the 64 KiB writes (default 64: each write is one godwit block; "
                         "4: most writes straddle two blocks)")
    args = ap.parse_args(argv)
    size = int(args.size_gib * GIB) // MIB * MIB
    if size < 16 * MIB:
        ap.error("--size-gib is too small (at least 16 MiB)")
    for tool in ("cp", "cat", "sync", "rsync", "findmnt"):
        if shutil.which(tool) is None:
            ap.error(f"{tool} is not installed")
    with work_folder(args.workdir, args.keep) as wd:
        repo = Path(__file__).resolve().parent.parent
        if os.stat(wd).st_dev != os.stat(repo).st_dev:
            log(f"note: {wd} is not on the filesystem of {repo}")
        free = shutil.disk_usage(wd).free
        need = int(size * 0.6 * 4.2)  # image, rsync copy, cp copy, godwit's cache
        if free < need:
            raise SystemExit(f"{wd} has {free / GIB:.1f} GiB free; the benchmark needs about {need / GIB:.1f}")
        report = bench(wd, size, args.seed, max(1, args.repeat), args.write_align_kib * 1024)
    if args.json:
        print(json.dumps(asdict(report), indent=2))
    else:
        print(render(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
