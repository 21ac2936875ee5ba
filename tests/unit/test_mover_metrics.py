"""The mover's lag on /metrics: how many committed cycles wait, and for how long the oldest has."""

from __future__ import annotations

from pathlib import Path

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.project.project import Project
from godwit.service.metrics import StateCollector
from tests.helpers import make_raw, scribble


def _gauges(project: Project) -> dict[str, float]:
    out: dict[str, float] = {}
    for family in StateCollector(project).collect():
        if family.name in ("godwit_mover_waiting_cycles", "godwit_mover_lag_seconds"):
            for sample in family.samples:
                if sample.labels.get("server") == "s":
                    out[family.name] = sample.value
    return out


def test_waiting_cycles_and_lag(project: Project, tmp_path: Path) -> None:
    disk = make_raw(tmp_path / "d.raw", 1 << 20)
    add_server(project, "s", [str(disk)])
    replication.start(project, "s")
    scribble(disk, seed=1)
    replication.cycle(project, "s")
    before = _gauges(project)
    assert before["godwit_mover_waiting_cycles"] == 2
    assert before["godwit_mover_lag_seconds"] > 0
    apply_server(project, "s")
    assert _gauges(project) == {"godwit_mover_waiting_cycles": 0, "godwit_mover_lag_seconds": 0.0}
