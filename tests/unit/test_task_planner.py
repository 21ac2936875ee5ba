"""The pipeline's task planner: many small dirty runs share a task, bounded by what is read."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from godwit.engine.cycle.changes import Run
from godwit.engine.cycle.pipeline import SPAN, HashTarget, Pipeline
from godwit.engine.cycle.work import CHUNK, HOLE_PIECE
from godwit.format.hashing import block_digest
from godwit.trackers import Kind, ScanTracker

BS = 64 << 10
ALGO = "xxh3-128"


def _plan(runs: list[Run]) -> list[tuple[Any, int, int, list[Run]]]:
    pipe = Pipeline(tracker=ScanTracker(), bs=BS, digest=block_digest(ALGO), compression_level=1, workers=1,
                    progress=None, hashes=HashTarget(Path("/nonexistent"), 1, ALGO))
    pipe._runs = lambda w: iter(runs)  # type: ignore[method-assign]
    return list(pipe.tasks([object()]))  # type: ignore[list-item]


def _merged(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    for off, n, k in runs:
        if out and out[-1][2] == k and out[-1][0] + out[-1][1] == off:
            out[-1] = (out[-1][0], out[-1][1] + n, k)
        else:
            out.append((off, n, k))
    return out


run_lengths = st.one_of(st.integers(1, 8), st.integers(60, 70), st.integers(1000, 5000))  # in blocks


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(run_lengths, st.sampled_from([Kind.CHANGED, Kind.UNCHANGED, Kind.ZERO])),
                min_size=1, max_size=60))
def test_tasks_cover_the_disk_in_order_within_their_bounds(spec: list[tuple[int, Kind]]) -> None:
    runs: list[Run] = []
    pos = 0
    for nblocks, kind in spec:
        runs.append((pos, nblocks * BS, kind))
        pos += nblocks * BS
    tasks = _plan(runs)
    at = 0
    pieces: list[Run] = []
    for _, off, n, sub in tasks:
        assert off == at and sub[0][0] == off and sub[-1][0] + sub[-1][1] == off + n
        for (a, la, _), (b, _, _) in itertools.pairwise(sub):
            assert a + la == b  # a task's runs are contiguous
        read = sum(ln for _, ln, k in sub if k == Kind.CHANGED)
        assert read <= CHUNK  # they share one read buffer
        if len(sub) == 1 and sub[0][2] != Kind.CHANGED:
            assert n <= HOLE_PIECE
        else:
            assert n <= SPAN
        pieces.extend(sub)
        at += n
    assert at == pos
    assert _merged(pieces) == _merged(runs)


def test_scattered_dirty_clusters_share_tasks() -> None:
    """A bitmap's 1% of 64 KiB writes over 2 GiB: a handful of tasks, not one per cluster."""
    runs: list[Run] = []
    pos = 0
    for _ in range(320):
        runs += [(pos, BS, Kind.CHANGED), (pos + BS, 30 * BS, Kind.UNCHANGED)]
        pos += 31 * BS
    tasks = _plan(runs)
    assert len(tasks) == 320 * BS // CHUNK  # 64 clusters of 64 KiB fill one 4 MiB buffer
    assert all(sum(1 for r in sub if r[2] == Kind.CHANGED) == CHUNK // BS for _, _, _, sub in tasks)
