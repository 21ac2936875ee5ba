"""Packs are sealed early while the store is idle, so the store writes during the reads; while a
put is under way the pack grows instead (more puts at once would only queue on the disk)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from godwit.engine.cycle import run_cycle, runner
from godwit.engine.cycle.packer import EARLY
from godwit.engine.inventory import add_server
from godwit.engine.reader import load_manifest
from godwit.project.project import Project
from tests.helpers import Replayer

MiB = 1 << 20


def _disk(path: Path, data_mib: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(64 * MiB)
        f.write(os.urandom(data_mib * MiB))  # incompressible: stored as it is read
    return path


def _pack_sizes(project: Project, number: int) -> list[int]:
    m = load_manifest(project.store, project.db.server("s").uid, number)
    sizes: dict[str, int] = {}
    for d in m.disks:
        for e in d.extents:
            sizes[e.pack] = sizes.get(e.pack, 0) + e.length
    return sorted(sizes.values())


def test_the_first_pack_is_stored_while_the_reads_go_on(project: Project, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    img = _disk(tmp_path / "d.raw", 24)
    add_server(project, "s", [str(img)])
    reads_done = threading.Event()
    start = runner._Closer.start

    def noted(self: runner._Closer) -> None:
        reads_done.set()
        start(self)

    put = type(project.store).put
    seen: list[bool] = []

    def slow_first_put(store: object, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        if "/packs/" in key and not seen:
            seen.append(reads_done.is_set())  # sealed before the reads ended
            assert reads_done.wait(30)  # held until every read is done: no other pack is sealed early
        put(store, key, data, overwrite=overwrite)  # type: ignore[arg-type]

    monkeypatch.setattr(runner._Closer, "start", noted)
    monkeypatch.setattr(type(project.store), "put", slow_first_put)
    res = run_cycle(project, "s")
    assert seen == [False]
    sizes = _pack_sizes(project, res.number)
    # Two packs: the early one (EARLY, up to one extent more), and the rest, which grew while the
    # first was being stored (32 MiB packs would have made one).
    assert len(sizes) == 2 and EARLY <= sizes[0] <= EARLY + 4 * MiB and sum(sizes) == 24 * MiB
    replay = Replayer(project, "s")
    replay.catch_up()
    assert bytes(replay.disks[0]) == img.read_bytes()


def test_early_packs_grow_with_what_the_cycle_sealed(project: Project, tmp_path: Path) -> None:
    img = _disk(tmp_path / "d.raw", 40)
    add_server(project, "s", [str(img)])
    res = run_cycle(project, "s")
    m = load_manifest(project.store, project.db.server("s").uid, res.number)
    order: list[str] = []
    sizes: dict[str, int] = {}
    for e in m.disks[0].extents:  # packs in the order they were sealed (disk order)
        if e.pack not in sizes:
            order.append(e.pack)
        sizes[e.pack] = sizes.get(e.pack, 0) + e.length
    sealed = 0
    for pack in order[:-1]:  # each early pack: at least EARLY and a quarter of what came before
        assert sizes[pack] >= max(EARLY, sealed // 4)
        sealed += sizes[pack]
    assert 2 <= len(order) <= 40 * MiB // EARLY
