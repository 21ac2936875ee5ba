"""One appliance, many disks (issue 13): `godwit replicate run --continuous` over many small servers
while one large disk is in its initial replication. Prints figures; not a test.

    .venv/bin/python bench/appliance.py [--small 200] [--small-mib 64] [--big-gib 8] [--minutes 3]
                                        [--workdir DIR] [--keep] [--json]

What it does, in one run on this machine:

1. makes ``--small`` disks of ``--small-mib`` MiB, half data (``benchimage.make_image``), every
   other one converted to qcow2, and one ``--big-gib`` GiB raw disk (60% data); one server each;
2. enables every server (no initial yet) and runs ``godwit replicate run --continuous`` as a child
   process: the scheduler runs all the initials at once, as parallel as
   ``replication.parallel_disks`` (the machine's default) allows, the mover applying each cycle;
   prints the time until every small disk has committed its initial cycle, then stops the loop;
3. removes the big server, and runs the small ones alone for ``--minutes`` while 1% of every small
   disk is written once a minute (the churn), sampling each small disk's RPO (now minus its last
   commit) every second: the "alone" figure;
4. adds the big disk again (a new server: a new initial of 4.8 GiB of data) and runs the loop the
   same way while its initial runs (at most ``--minutes``). The target: RPO p99 with the big
   initial ≤ 2× RPO p99 alone (no starvation). One small delta cycle run by itself (nothing else
   running) is printed too;
5. the appliance process's peak RSS (``os.wait4`` rusage ``ru_maxrss`` of the child) against 1 GiB;
6. when present, the figures of ``bench/bigdisk.py`` (``measure``: a 2 TiB sparse disk's delta RSS
   and state size) and of ``bench/mover.py`` (``measure_vs_initial``: the mover's MB/s against the
   initial cycle's), each in its own temporary folder.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchimage import MIB, log, make_image

GIB = 1 << 30
CHURN = 0.01  # of every small disk's size, once a minute
WRITE = 64 * 1024


def make_disks(work: Path, n: int, small: int, big: int) -> tuple[list[tuple[str, Path, str]], Path]:
    disks: list[tuple[str, Path, str]] = []
    for i in range(n):
        raw = work / f"small{i:03d}.raw"
        make_image(raw, small, 1000 + i, data_fraction=0.5)
        if i % 2:
            q = raw.with_suffix(".qcow2")
            subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(q)], check=True)
            raw.unlink()
            disks.append((f"s{i:03d}", q, "qcow2"))
        else:
            disks.append((f"s{i:03d}", raw, "raw"))
    big_img = work / "big.raw"
    make_image(big_img, big, 7)
    return disks, big_img


def churn(disks: list[tuple[str, Path, str]], size: int, rng: random.Random) -> int:
    """Write CHURN of every small disk at random 64 KiB-aligned places; returns the writes refused
    (a qcow2 image briefly locked by the cycle reading it)."""
    refused = 0
    per_disk = max(1, int(size * CHURN) // WRITE)
    for _, path, fmt in disks:
        offsets = [rng.randrange(size // WRITE) * WRITE for _ in range(per_disk)]
        if fmt == "raw":
            fd = os.open(path, os.O_WRONLY)
            try:
                for off in offsets:
                    os.pwrite(fd, rng.randbytes(WRITE), off)
            finally:
                os.close(fd)
            continue
        cmds = [a for off in offsets for a in ("-c", f"write -P {rng.randrange(1, 255)} {off} {WRITE}")]
        for _attempt in range(20):
            r = subprocess.run(["qemu-io", "-f", "qcow2", *cmds, str(path)], capture_output=True, text=True)
            if r.returncode == 0 and "error" not in r.stdout.lower():
                break
            time.sleep(0.1)
        else:
            refused += 1
    return refused


def last_commits(db: Path) -> tuple[dict[str, float], int]:
    """Per server, its newest commit time; and how many cycles are open."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute("select s.name, max(c.committed) from servers s join cycles c on c.server_id = s.id "
                           "where c.state in ('committed', 'applied') group by s.name").fetchall()
        open_ = con.execute("select count(*) from cycles where state = 'open'").fetchone()[0]
        return {r[0]: float(r[1]) for r in rows if r[1] is not None}, int(open_)
    finally:
        con.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    v = sorted(values)
    return v[min(len(v) - 1, round(q * (len(v) - 1)))]


def run_loop_child(project_root: Path, log_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "godwit", "replicate", "run", "--continuous",
                             "--min-interval", "1", "--project", str(project_root)],
                            stdout=subprocess.DEVNULL, stderr=open(log_path, "ab"))


def stop_child(proc: subprocess.Popen[bytes]) -> int:
    """SIGTERM (running cycles finish), then the child's peak RSS in bytes."""
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = 0
            return usage.ru_maxrss * 1024  # KiB on Linux
        time.sleep(0.2)
    proc.kill()
    _pid, _status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss * 1024


def sample(db: Path, small: list[str], disks: list[tuple[str, Path, str]], size: int, seconds: float,
           rng: random.Random, *, while_open: str | None = None) -> tuple[list[float], int, float]:
    """RPO samples of the small servers every second for ``seconds`` (or until ``while_open``'s
    initial commits), with the churn once a minute; returns (samples, refused writes, seconds)."""
    samples: list[float] = []
    refused = 0
    t0 = time.time()
    next_churn = t0
    while time.time() - t0 < seconds:
        if time.time() >= next_churn:
            refused += churn(disks, size, rng)
            next_churn += 60
        commits, _ = last_commits(db)
        now = time.time()
        samples.extend(now - commits[s] for s in small if s in commits)
        if while_open is not None and while_open in commits:
            break
        time.sleep(1.0)
    return samples, refused, time.time() - t0


def optional(module: str, fn: str, tmp_root: Path) -> dict[str, Any] | str:
    """Another benchmark's figures, or why they are missing."""
    here = Path(__file__).parent
    if not (here / f"{module}.py").exists():
        return f"bench/{module}.py is absent: skipped"
    try:
        mod = importlib.import_module(module)
    except Exception as exc:  # report it; the rest of the benchmark goes on
        return f"bench/{module}.py does not import: {exc}"
    if not hasattr(mod, fn):
        return f"bench/{module}.py has no {fn}(): skipped"
    tmp = Path(tempfile.mkdtemp(prefix=f"godwit-bench-{module}-", dir=tmp_root))
    try:
        return dict(getattr(mod, fn)(tmp))
    finally:
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def bench(work: Path, n: int, small_size: int, big_size: int, minutes: float, extras: bool) -> dict[str, Any]:
    from godwit.config.model import default_parallel_disks
    from godwit.engine import lifecycle
    from godwit.engine.inventory import add_server
    from godwit.project.project import init

    rng = random.Random(13)
    log(f"making {n} disks of {small_size // MIB} MiB and one of {big_size / GIB:g} GiB in {work}")
    disks, big_img = make_disks(work, n, small_size, big_size)
    project = init(work / "proj")
    for name, path, _ in disks:
        add_server(project, name, [str(path)])
    add_server(project, "big", [str(big_img)])
    with project.db.unit() as u:  # enabled, no initial yet: the loop's scheduler runs all 201
        for s in u.servers.all():
            u.servers.set_state(s.id, "replicating")
    db = project.state_dir / "godwit.db"
    small = [d[0] for d in disks]
    figures: dict[str, Any] = {"small_disks": n, "small_mib": small_size // MIB, "big_gib": big_size / GIB,
                               "parallel_disks": project.config.replication.parallel_disks or default_parallel_disks(),
                               "cpus": os.cpu_count()}
    project.close()

    # -- 1. every initial at once -------------------------------------------------------------------
    log(f"phase 1: replicate run --continuous, all {n + 1} initials at once")
    t0 = time.time()
    proc = run_loop_child(work / "proj", work / "loop.log")
    most_open = 0
    while True:
        commits, opened = last_commits(db)
        most_open = max(most_open, opened)
        if all(s in commits for s in small):
            break
        if proc.poll() is not None:
            raise SystemExit(f"the loop exited early; see {work / 'loop.log'}")
        time.sleep(0.5)
    figures["small_initials_s"] = time.time() - t0
    figures["most_open_cycles"] = most_open
    commits, _ = last_commits(db)
    figures["big_initial_in_phase1_s"] = (commits["big"] - t0) if "big" in commits else None
    rss1 = stop_child(proc)
    log(f"all small initials committed after {figures['small_initials_s']:.1f} s; peak RSS {rss1 / MIB:.0f} MiB")

    # -- 2. the small disks alone ---------------------------------------------------------------------
    from godwit.engine.inventory import remove_server
    from godwit.project.project import open_project

    project = open_project(work / "proj")
    lifecycle.stop(project, "big")
    remove_server(project, "big")  # added again below: a new server, so a new initial of the same disk
    project.close()
    log("phase 2: the small disks alone, 1% churn a minute")
    proc = run_loop_child(work / "proj", work / "loop.log")
    samples, refused, took = sample(db, small, disks, small_size, minutes * 60, rng)
    rss2 = stop_child(proc)
    figures["alone"] = {"seconds": took, "samples": len(samples), "p50": pct(samples, 0.5),
                        "p99": pct(samples, 0.99), "max": max(samples, default=float("nan")),
                        "refused_writes": refused}
    log(f"alone: RPO p99 {figures['alone']['p99']:.1f} s; peak RSS {rss2 / MIB:.0f} MiB")

    # -- 3. the small disks while the big disk's initial runs -------------------------------------------------
    project = open_project(work / "proj")
    add_server(project, "big", [str(big_img)])
    project.db.set_server_state(project.db.server("big").id, "replicating")
    project.close()
    log("phase 3: the small disks while the big initial runs, 1% churn a minute")
    t0 = time.time()
    proc = run_loop_child(work / "proj", work / "loop.log")
    samples, refused, took = sample(db, small, disks, small_size, minutes * 60, rng, while_open="big")
    commits, _ = last_commits(db)
    figures["big_initial_s"] = (commits["big"] - t0) if "big" in commits else None
    rss3 = stop_child(proc)
    figures["with_big"] = {"seconds": took, "samples": len(samples), "p50": pct(samples, 0.5),
                           "p99": pct(samples, 0.99), "max": max(samples, default=float("nan")),
                           "refused_writes": refused}
    log(f"with big: RPO p99 {figures['with_big']['p99']:.1f} s over {took:.0f} s; peak RSS {rss3 / MIB:.0f} MiB")
    project = open_project(work / "proj")
    one: list[float] = []
    for name, path, fmt in disks[:6]:  # one server's delta cycle with 1% churn, nothing else running
        churn([(name, path, fmt)], small_size, rng)
        t = time.perf_counter()
        lifecycle.cycle(project, name)
        one.append(time.perf_counter() - t)
    project.close()
    figures["one_cycle_alone_s"] = statistics.median(one)
    figures["peak_rss_bytes"] = max(rss1, rss2, rss3)
    figures["rpo_ratio"] = figures["with_big"]["p99"] / figures["alone"]["p99"]
    figures["verdict_rpo"] = "met" if figures["rpo_ratio"] <= 2.0 else "NOT met"
    figures["verdict_rss"] = "met" if figures["peak_rss_bytes"] <= GIB else "NOT met"
    if extras:
        figures["bigdisk"] = optional("bigdisk", "measure", work)
        figures["mover"] = optional("mover", "measure_vs_initial", work)
    return figures


def render(f: dict[str, Any]) -> str:
    w, a = f["with_big"], f["alone"]
    big = f"{f['big_initial_s']:.0f} s" if f["big_initial_s"] is not None else "still running at the end"
    big1 = (f"{f['big_initial_in_phase1_s']:.0f} s" if f["big_initial_in_phase1_s"] is not None
            else "still running")
    lines = [
        f"{f['small_disks']} small disks of {f['small_mib']} MiB (half data, raw and qcow2) + one "
        f"{f['big_gib']:g} GiB disk; parallel_disks {f['parallel_disks']}, {f['cpus']} CPUs",
        f"  most cycles open at once:              {f['most_open_cycles']}",
        f"  all small initials committed after:    {f['small_initials_s']:.1f} s "
        f"(all {f['small_disks'] + 1} initials at once; the big one then: {big1})",
        f"  big initial alone among small deltas:  {big}",
        f"  small RPO while the big initial runs:  p50 {w['p50']:.1f} s, p99 {w['p99']:.1f} s, max {w['max']:.1f} s "
        f"({w['samples']} samples over {w['seconds']:.0f} s, 1% churn a minute)",
        f"  small RPO alone (no big disk):         p50 {a['p50']:.1f} s, p99 {a['p99']:.1f} s, max {a['max']:.1f} s",
        f"  one small delta cycle by itself:       {f['one_cycle_alone_s']:.2f} s",
        f"  RPO p99 with big / alone:              {f['rpo_ratio']:.2f}x (target <= 2x): {f['verdict_rpo']}",
        f"  appliance peak RSS:                    {f['peak_rss_bytes'] / MIB:.0f} MiB (target <= 1024): "
        f"{f['verdict_rss']}",
    ]
    for key in ("bigdisk", "mover"):
        if key in f:
            v = f[key]
            lines.append(f"  {key}: " + (v if isinstance(v, str) else json.dumps(v, default=str)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", type=int, default=200, help="small disks (default 200)")
    ap.add_argument("--small-mib", type=int, default=64, help="size of a small disk in MiB (default 64)")
    ap.add_argument("--big-gib", type=float, default=8.0, help="size of the big disk in GiB (default 8)")
    ap.add_argument("--minutes", type=float, default=3.0, help="minutes of each RPO phase at most (default 3)")
    ap.add_argument("--no-extras", action="store_true", help="skip bench/bigdisk.py and bench/mover.py")
    ap.add_argument("--workdir", help="a folder for everything (default: a temp dir in /var/tmp)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.small < 1 or args.small_mib < 2 or args.big_gib <= 0 or args.minutes <= 0:
        ap.error("--small >= 1, --small-mib >= 2, --big-gib > 0 and --minutes > 0")
    work = Path(tempfile.mkdtemp(prefix="godwit-bench-appliance-", dir=args.workdir or "/var/tmp"))
    try:
        figures = bench(work, args.small, args.small_mib * MIB, int(args.big_gib * GIB) // MIB * MIB,
                        args.minutes, not args.no_extras)
    finally:
        if not args.keep:
            subprocess.run(["rm", "-rf", str(work)], check=False)
    print(json.dumps(figures, indent=2, default=str) if args.json else render(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
