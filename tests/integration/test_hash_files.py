"""Block-hash files as a project lives with them: a version 1 file of an older godwit is the base
of the next cycle (no resync), which writes version 2; only files something may read are kept;
a 2 TiB sparse disk costs state and memory for its data, not its size."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path
from types import ModuleType

import pytest
import xxhash

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.engine.reader import load_manifest
from godwit.format import blockhashes
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.state import hashstore
from tests.helpers import Replayer, make_raw, write_at


def _load_bench(name: str) -> ModuleType:
    """A bench script as a module, without putting bench/ on sys.path (its azure.py would shadow
    the Azure SDK's namespace package for every later import in the session)."""
    path = Path(__file__).resolve().parents[2] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"godwit_bench_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bigdisk = _load_bench("bigdisk")

pytestmark = pytest.mark.both_databases


def _as_v1(path: Path, algorithm: str, bs: int) -> None:
    """Rewrite a file as godwit 0.1 wrote it (docs/format.md, version 1 body: every digest)."""
    size, digests = blockhashes.read(path, algorithm, bs)
    body = struct.pack("<4sBBxxIQ", b"GWBH", 1, 1, bs, size) + bytes(digests)
    path.write_bytes(body + xxhash.xxh3_128_digest(body))


def test_v1_file_of_an_older_project_is_the_base_and_the_next_cycle_writes_v2(project: Project,
                                                                             tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", (8 << 20) + 4096, seed=4)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    apply_server(project, "s")
    disk = project.db.disks(project.db.server("s").id)[0]
    bs = project.config.replication.block_size
    first = hashstore.path(project.hashes_dir, disk.uid, 1)
    _as_v1(first, "xxh3-128", bs)
    assert first.read_bytes()[4] == 1
    assert migration.verify(project, "s", "1").ok  # verify reads version 1 in windows too
    write_at(img, 3 << 20, b"\x42" * 100)
    res = replication.cycle(project, "s")
    assert not [w for w in res.warnings if "resends the whole disk" in w]
    assert res.bytes_changed == bs, "only the changed block is sent: the v1 base was used"
    second = hashstore.path(project.hashes_dir, disk.uid, 2)
    assert second.read_bytes()[4] == 2
    assert first.exists(), "the live recovery point's file is kept"
    src = img.read_bytes()
    assert blockhashes.read(second, "xxh3-128", bs) == (len(src), bytearray(b"".join(
        xxhash.xxh3_128_digest(src[i:i + bs]) for i in range(0, len(src), bs))))
    apply_server(project, "s")
    assert migration.verify(project, "s", "2").ok and migration.verify(project, "s", "1").ok


def test_only_the_files_a_resume_verify_or_resync_may_read_are_kept(project: Project, tmp_path: Path) -> None:
    img = make_raw(tmp_path / "d.raw", 4 << 20, seed=6)
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    disk = project.db.disks(project.db.server("s").id)[0]
    folder = project.hashes_dir / disk.uid
    (folder / f"{7:010d}.tmp").write_bytes(b"a write that died")  # never read again
    (folder / f"{1:010d}.tmp").write_bytes(b"a write that died")
    replication.cycle(project, "s")
    # Nothing applied yet: cycle 1 will become a recovery point (verify, resync read it).
    assert sorted(p.name for p in folder.iterdir()) == [f"{1:010d}.bin", f"{2:010d}.bin"]
    apply_server(project, "s")
    write_at(img, 0, b"x")
    replication.cycle(project, "s")
    assert sorted(p.name for p in folder.iterdir()) == [f"{n:010d}.bin" for n in (1, 2, 3)]
    replication.resync(project, "s")  # discards cycle 3, which was never applied
    replication.cycle(project, "s")  # cycle 4, against point 2
    names = sorted(p.name for p in folder.iterdir() if p.suffix == ".bin")
    assert f"{3:010d}.bin" not in names and f"{4:010d}.bin" in names and f"{2:010d}.bin" in names
    apply_server(project, "s")
    assert migration.verify(project, "s", "4").ok


@pytest.mark.slow
def test_a_2_tib_sparse_disk_costs_state_and_memory_for_its_data(tmp_path: Path) -> None:
    """Each cycle runs in its own process; a regression to dense digest arrays (512 MiB per array
    for 2 TiB at 64 KiB blocks) fails both bounds."""
    r = bigdisk.measure(tmp_path, data_bytes=64 << 20)
    assert r["disk_size"] == 2 << 40
    assert isinstance(r["delta_rss"], int) and isinstance(r["initial_rss"], int)
    assert r["delta_rss"] < 300 * 10**6, r
    assert r["initial_rss"] < 400 * 10**6, r
    assert r["hash_files"] == 2
    assert isinstance(r["state_bytes"], int) and isinstance(r["hashes_of_data"], int)
    assert r["state_bytes"] <= 4 * r["hashes_of_data"], r


def test_a_resumed_cycle_writes_the_journaled_digests_even_where_the_disk_is_a_hole_now(
        project: Project, tmp_path: Path) -> None:
    """docs/architecture.md, "A cycle", step 4, through the streamed hash file: blocks sent before
    the crash keep their journaled digests (here a 5 MiB stretch that became a hole, so it is one
    task that is not read, and a block rewritten after the crash), so the next cycle sends them."""
    import os

    from godwit.engine.cycle import CycleRunner

    mib = 1 << 20
    img = tmp_path / "d.raw"
    with open(img, "wb") as f:
        f.truncate(16 * mib)
        f.seek(8 * mib)
        f.write(os.urandom(6 * mib))
    add_server(project, "s", [str(img)])
    replication.start(project, "s")
    write_at(img, 8 * mib, os.urandom(6 * mib))  # cycle 2 sends all of [8, 14) MiB ...
    view2 = img.read_bytes()
    orig = CycleRunner._commit

    def die(*_a: object, **_k: object) -> None:
        raise SystemExit("killed in _commit")

    CycleRunner._commit = die  # type: ignore[method-assign]
    try:
        with pytest.raises(SystemExit):
            replication.cycle(project, "s")  # ... journals it, and dies
    finally:
        CycleRunner._commit = orig  # type: ignore[method-assign]
    fd = os.open(img, os.O_RDWR)
    try:
        os.truncate(img, 8 * mib)  # [8, 13) MiB becomes a hole, [13, 14) MiB is rewritten
        os.truncate(img, 16 * mib)
        os.pwrite(fd, view2[13 * mib:14 * mib], 13 * mib)
        os.pwrite(fd, b"after the crash", 13 * mib + 4096)
    finally:
        os.close(fd)
    res = replication.cycle(project, "s")
    assert res.resumed and res.number == 2 and res.packs_uploaded == 0
    disk = project.db.disks(project.db.server("s").id)[0]
    bs = project.config.replication.block_size
    _, digests = blockhashes.read(hashstore.path(project.hashes_dir, disk.uid, 2), "xxh3-128", bs)
    assert bytes(digests) == b"".join(xxhash.xxh3_128_digest(view2[i:i + bs]) for i in range(0, len(view2), bs))
    replay = Replayer(project, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == view2, "the resumed cycle carries what was journaled"
    res = replication.cycle(project, "s")
    assert res.bytes_changed == bs  # the block rewritten after the crash
    m = load_manifest(project.store, project.db.server("s").uid, 3)
    assert m.disks[0].zeros == [(8 * mib, 5 * mib)]  # the stretch that became a hole
    replay.catch_up()
    assert bytes(replay.disks[0]) == img.read_bytes()
