"""The planner on histories made by real cycles on this machine: the initial ETA under a throttle
against the measured time of the initial cycle that followed (within 10%, also through
`plan --review`), and the final-sync prediction against a measured final cycle after a known
churn (within 25%)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from godwit.engine import lifecycle as replication
from godwit.engine.inventory import add_server
from godwit.engine.mover import apply_server
from godwit.migrate import migration
from godwit.ops import planner, waves
from godwit.project.project import Project, init, open_project
from tests.helpers import write_at

pytestmark = pytest.mark.slow

CAP = 40.0  # Mbps: 32 MiB take 6.7 s


def _throttled(tmp_path: Path) -> Project:
    """A project whose first server ran unthrottled (that measures the link), then capped at CAP."""
    p = init(tmp_path / "proj")
    a = tmp_path / "a.raw"
    a.write_bytes(os.urandom(16 << 20))
    add_server(p, "a", [str(a)])
    replication.start(p, "a")
    p.close()
    cfg = tmp_path / "proj" / "godwit.toml"
    cfg.write_text(cfg.read_text().replace("# max_mbps = 100", f"max_mbps = {CAP}"))
    return open_project(tmp_path / "proj")


def test_initial_eta_and_final_sync_against_real_cycles(tmp_path: Path) -> None:
    p = _throttled(tmp_path)
    try:
        b = tmp_path / "b.raw"
        with open(b, "wb") as f:  # 32 MiB of data at the start, a hole after it
            f.write(os.urandom(32 << 20))
            f.truncate(64 << 20)
        add_server(p, "b", [str(b)])
        waves.create(p, "w", ["b"])

        rep = planner.plan(p, wave="w")
        assert rep.link_from == "measured cycle throughput" and rep.link_mbps > CAP
        (bp,) = rep.servers
        assert bp.inputs.used_from == "allocation map" and bp.inputs.used_bytes == 32 << 20
        assert bp.inputs.ratio_from == "other servers" and 0.99 < bp.inputs.compress_ratio < 1.02
        assert bp.initial_seconds is not None and rep.wave_initial_seconds == pytest.approx(bp.initial_seconds)
        first = replication.start(p, "b")
        assert first is not None
        assert abs(bp.initial_seconds - first.t_wall) <= 0.10 * first.t_wall, (bp.initial_seconds, first.t_wall)
        (row,) = planner.review(p, "w")
        assert row.actual_initial_seconds == pytest.approx(first.t_wall)
        assert row.initial_error is not None and abs(row.initial_error) <= 0.10

        # A known churn per cycle: 8 MiB of new random data, the same before the delta and before the final.
        rng = random.Random(3)
        churn = 8 << 20
        write_at(b, 4 << 20, rng.randbytes(churn))
        delta = replication.cycle(p, "b")
        assert delta.bytes_changed == churn
        cycles = p.db.cycles(p.db.server("b").id)
        gap = cycles[-1].started - cycles[-2].started  # the span that churn accumulated over
        write_at(b, 20 << 20, rng.randbytes(churn))
        after = planner.plan(p, servers=["b"], cutover_gap=gap)
        (bp,) = after.servers
        assert bp.initial_done and bp.final_sync_bytes == pytest.approx(churn, rel=0.02)
        assert [h.bytes_changed for h in bp.inputs.churn_by_hour] == [churn]  # the delta, in its hour of day
        assert bp.steady_mbps is not None and bp.keeps_up is True and bp.rpo_seconds is not None
        predicted = bp.final_sync_seconds
        assert predicted is not None
        apply_server(p, "b")
        migration.planned_migration(p, "b", out_dir=tmp_path / "out")
        final = p.db.cycles(p.db.server("b").id)[-1]
        assert final.kind == "final" and final.bytes_changed == churn
        assert abs(predicted - final.t_wall) <= 0.25 * final.t_wall, (predicted, final.t_wall)
    finally:
        p.close()
