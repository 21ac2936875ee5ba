"""Block-hash files as a project lives with them: a version 1 file of an older godwit is the base
of the next cycle (no resync), which writes version 2; only files something may read are kept;
a 2 TiB sparse disk costs state and memory for its data, not its size."""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import pytest
import xxhash

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.format import blockhashes
from godwit.migrate import migration
from godwit.project.project import Project
from godwit.state import hashstore
from tests.helpers import make_raw, write_at

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import bigdisk

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
