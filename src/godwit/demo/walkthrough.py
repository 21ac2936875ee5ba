"""`godwit demo`: the whole story on a generated sample server, on the embedded defaults.

A raw system disk with a real ext4 filesystem (``mkfs.ext4 -d``) and a qcow2 data disk; files
change between delta cycles (``debugfs -w`` edits the unmounted filesystem, ``qemu-io`` writes
the qcow2 as a VM would); the mover seals recovery points; test migrations at an older and the
latest point are checked with ``qemu-img compare`` and ``e2fsck -fn``; a planned migration ends it.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from rich.console import Console
from rich.table import Table

from godwit.engine import lifecycle as replication
from godwit.engine.cycle import ProgressFn
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.errors import GodwitError, MigrationError
from godwit.migrate import migration
from godwit.project.project import init, open_project

#: Shows one cycle's progress: (label) -> a context giving the engine's progress callback. The CLI
#: passes its Rich bars; the demo itself stays on the library API.
ProgressFactory = Callable[[str], AbstractContextManager[ProgressFn]]


@contextmanager
def no_progress(_label: str) -> Iterator[ProgressFn]:
    yield lambda _i, _d, _t: None

console = Console(stderr=True, highlight=False)
NEEDED = ("mkfs.ext4", "debugfs", "e2fsck", "qemu-img", "qemu-io")


def _run(*argv: str) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise MigrationError(f"demo step failed: {' '.join(argv[:2])}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def _make_sample(root: Path, rng: random.Random) -> tuple[Path, Path]:
    tree = root / "sample-tree"
    for sub in ("etc", "var/www", "var/log", "srv/data"):
        (tree / sub).mkdir(parents=True, exist_ok=True)
    (tree / "etc/hostname").write_text("web01\n")
    (tree / "var/www/index.html").write_text("<h1>web01, about to migrate</h1>\n" * 50)
    for i in range(24):
        (tree / f"srv/data/blob{i:02d}.bin").write_bytes(rng.randbytes(rng.randrange(256 << 10, 3 << 20)))
    for i in range(8):
        (tree / f"var/log/app{i}.log").write_text("".join(f"line {j} ok\n" for j in range(rng.randrange(500, 5000))))
    system = root / "web01-system.raw"
    system.unlink(missing_ok=True)
    _run("mkfs.ext4", "-q", "-F", "-L", "web01-root", "-d", str(tree), str(system), "192M")
    data_raw = root / "web01-data.raw"
    with open(data_raw, "wb") as f:
        f.truncate(96 << 20)
        for _ in range(20):
            f.seek(rng.randrange(0, 90) << 20)
            f.write(rng.randbytes(rng.randrange(64 << 10, 1 << 20)))
    data = root / "web01-data.qcow2"
    data.unlink(missing_ok=True)
    _run("qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(data_raw), str(data))
    data_raw.unlink()
    shutil.rmtree(tree)
    return system, data


def _change_files(root: Path, system: Path, data: Path, rng: random.Random, round_: int) -> str:
    staged = root / "staged.bin"
    staged.write_bytes(rng.randbytes(rng.randrange(512 << 10, 2 << 20)))
    name = f"/srv/data/upload-{round_}.bin"
    victim = f"/srv/data/blob{rng.randrange(24):02d}.bin"
    _run("debugfs", "-w", "-R", f"write {staged} {name}", str(system))
    _run("debugfs", "-w", "-R", f"rm {victim}", str(system))
    staged.unlink()
    chunk = root / "chunk.bin"
    chunk.write_bytes(rng.randbytes(256 << 10))
    off = rng.randrange(0, 90) << 20
    _run("qemu-io", "-f", "qcow2", "-c", f"write -q -s {chunk} {off} {256 << 10}", str(data))
    chunk.unlink()
    return f"wrote {name}, removed {victim}, 256 KiB into the data disk"


def _view(disk: Path, fmt: str, out: Path) -> Path:
    _run("qemu-img", "convert", "-f", fmt, "-O", "raw", str(disk), str(out))
    return out


def _compare(out: Path, out_fmt: str, view: Path) -> bool:
    fmt = {"vhd": "vpc"}.get(out_fmt, out_fmt)
    return subprocess.run(["qemu-img", "compare", "-q", "-f", fmt, "-F", "raw", str(out), str(view)],
                          capture_output=True, check=False).returncode == 0


def _fsck(disk: Path, fmt: str) -> bool:
    if fmt != "raw":
        tmp = disk.with_suffix(".fsck.raw")
        _view(disk, {"vhd": "vpc"}.get(fmt, fmt), tmp)
        try:
            return _fsck(tmp, "raw")
        finally:
            tmp.unlink()
    return subprocess.run(["e2fsck", "-fn", str(disk)], capture_output=True, check=False).returncode == 0


def run_demo(path: Path, *, cycles: int = 4, progress: ProgressFactory = no_progress) -> int:
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        raise GodwitError(f"the demo needs {', '.join(missing)}",
                          hint="apt-get install qemu-utils e2fsprogs (see .ci/run)")
    t_start = time.perf_counter()
    rng = random.Random(2026)
    root = path.resolve()
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    views = root / "views"
    views.mkdir()
    console.rule("[bold]godwit demo")
    console.print("1. a sample server: ext4 system disk (raw, mkfs.ext4 -d) + data disk (qcow2)")
    system, data = _make_sample(root, rng)
    project = init(root / "project", "demo")
    project.close()
    p = open_project(root / "project")
    add_server(p, "web01", [str(system), str(data)])
    console.print(f"2. project in {p.root}; server web01 added with 2 disks")

    rows: list[tuple[str, str, str, str, str]] = []
    with progress("web01 initial") as prog:
        res = replication.start(p, "web01", progress=prog)
    assert res is not None
    rows.append((str(res.number), res.kind, f"{res.bytes_read >> 20} MiB", f"{res.bytes_sent / 1e6:.1f} MB",
                 f"{res.t_wall:.2f}s"))
    _view(system, "raw", views / "c1-d0.raw")
    _view(data, "qcow2", views / "c1-d1.raw")
    apply_server(p, "web01")
    console.print(f"3. initial cycle {res.number} committed and applied (recovery point 1)")
    for i in range(2, cycles + 2):
        what = _change_files(root, system, data, rng, i)
        with progress(f"web01 cycle {i}") as prog:
            res = replication.cycle(p, "web01", progress=prog)
        _view(system, "raw", views / f"c{res.number}-d0.raw")
        _view(data, "qcow2", views / f"c{res.number}-d1.raw")
        apply_server(p, "web01")
        rows.append((str(res.number), res.kind, f"{res.bytes_read >> 20} MiB", f"{res.bytes_sent / 1e6:.2f} MB",
                     f"{res.t_wall:.2f}s"))
        console.print(f"   cycle {res.number}: {what}; sent {res.bytes_sent / 1e6:.2f} MB, "
                      f"recovery point {res.number} sealed")

    st = replication.status(p, "web01")[0]
    stat = Table("disk", "format", "size", "last cycle", "RPO", "read", "sent", "MB/s", "bottleneck",
                 title="godwit replicate status web01")
    for ds in st.disks:
        stat.add_row(str(ds.index), ds.format, f"{ds.size >> 20} MiB", str(ds.last_cycle),
                     f"{st.rpo_seconds or 0:.0f}s", f"{ds.bytes_read >> 20} MiB", f"{ds.bytes_sent / 1e6:.2f} MB",
                     f"{(ds.throughput_bps or 0) / 1e6:.0f}", st.cycles[-1].bottleneck)
    console.print(stat)
    points = [rp["number"] for rp in migration.recovery_points(p, "web01")]
    older, latest = points[0], points[-1]
    checks: list[tuple[str, str, bool]] = []
    for rp, fmt in ((older, "vhd"), (latest, "qcow2")):
        out = root / f"test-rp{rp}"
        m = migration.test_migration(p, "web01", recovery_point=str(rp), fmt=fmt, out_dir=out)
        for d, f in enumerate(m.files):
            ok = _compare(Path(f), fmt, views / f"c{rp}-d{d}.raw")
            checks.append((f"test migration rp {rp} disk{d} ({fmt})", "qemu-img compare", ok))
        checks.append((f"test migration rp {rp} disk0 filesystem", "e2fsck -fn", _fsck(Path(m.files[0]), fmt)))
        rep = migration.verify(p, "web01", str(rp))
        checks.append((f"replica at rp {rp}", "godwit verify", rep.ok))
        migration.cleanup(p, "web01")
    console.print(f"4. test migrations at recovery points {older} (vhd) and {latest} (qcow2) checked and cleaned up")

    _change_files(root, system, data, rng, 99)
    planned = migration.planned_migration(p, "web01", fmt="raw", out_dir=root / "migrated",
                                          shutdown_command="true")
    _view(system, "raw", views / "final-d0.raw")
    _view(data, "qcow2", views / "final-d1.raw")
    for d, f in enumerate(planned.files):
        checks.append((f"planned migration disk{d} (raw)", "qemu-img compare",
                       _compare(Path(f), "raw", views / f"final-d{d}.raw")))
    checks.append(("planned migration disk0 filesystem", "e2fsck -fn", _fsck(Path(planned.files[0]), "raw")))
    console.print(f"5. planned migration: final cycle {planned.recovery_point}, disks in {root / 'migrated'}, "
                  f"server state {p.db.server('web01').state}")

    cyc = Table("cycle", "kind", "read", "sent", "wall", title="cycles")
    for r in rows:
        cyc.add_row(*r)
    console.print(cyc)
    chk = Table("what", "check", "result", title="checks")
    for what, how, ok in checks:
        chk.add_row(what, how, "[green]ok[/]" if ok else "[red]FAILED[/]")
    console.print(chk)
    shutil.rmtree(views)
    p.close()
    failed = [c for c in checks if not c[2]]
    console.print(f"demo finished in {time.perf_counter() - t_start:.0f}s: "
                  + ("[green]all checks passed[/]" if not failed else f"[red]{len(failed)} check(s) failed[/]"))
    return 1 if failed else 0
