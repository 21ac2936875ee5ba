"""Property: over simulated servers and disks driven by a fake clock, the scheduler never runs more
than ``parallel_disks`` disks at once, never two cycles of one server at once, and no cycle waits
longer than its bound once it is due (neither initials nor large servers starve).

The bound: a due cycle becomes "starving" after ``starve_after`` seconds and is noticed at the next
event (within one cycle D); from then on every starving cycle ahead of it starts within D of the one
before (nothing ranked after the head starts until it fits), so it starts within
``starve_after + (servers + 1) * D``.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from godwit.engine.scheduler import Candidate, Scheduler


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


@dataclass
class SimServer:
    name: str
    disks: int
    initial_seconds: float
    delta_seconds: float
    last_commit: float | None = None
    running: bool = False
    eligible_at: float = 0.0  # when it is due and out of any backoff (the simulation's own account)
    failures: int = 0


@settings(max_examples=150, deadline=None)
@given(parallel=st.integers(1, 6), n=st.integers(1, 12), interval=st.sampled_from([1.0, 5.0, 30.0]),
       fail_rate=st.sampled_from([0.0, 0.1, 0.3]), seed=st.integers(0, 2**32 - 1))
def test_budget_exclusivity_and_bounded_wait(parallel: int, n: int, interval: float, fail_rate: float,
                                             seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock()
    starve_after = 20.0
    base, cap = 3.0, 12.0
    sched = Scheduler(parallel, interval, clock=clock, starve_after=starve_after, backoff_base=base,
                      backoff_cap=cap)
    servers = {f"s{i}": SimServer(f"s{i}", rng.randint(1, parallel), rng.uniform(5, 40), rng.uniform(0.5, 8))
               for i in range(n)}
    d_max = max(max(s.initial_seconds, s.delta_seconds) for s in servers.values())
    bound = starve_after + (n + 1) * d_max
    ends: list[tuple[float, str, bool]] = []  # (time, server, ok)
    horizon = 600.0
    worst = 0.0
    while clock.t < horizon:
        cands = [Candidate(s.name, s.disks, s.last_commit) for s in servers.values()]
        for name in sched.pick(cands):
            s = servers[name]
            assert not s.running, f"{name}: a second cycle while one runs"
            waited = clock.t - s.eligible_at
            assert waited >= -1e-9, f"{name} started before it was due"
            assert waited <= bound, f"{name} waited {waited:.1f}s, bound {bound:.1f}s"
            worst = max(worst, waited)
            s.running = True
            took = s.initial_seconds if s.last_commit is None else s.delta_seconds
            heapq.heappush(ends, (clock.t + took, name, rng.random() >= fail_rate))
            s.eligible_at = clock.t + interval  # the next start is due one interval after this one
        in_flight = sum(s.disks for s in servers.values() if s.running)
        assert in_flight <= parallel, f"{in_flight} disks in flight, budget {parallel}"
        assert in_flight == sched.in_flight
        # The next event: a cycle ends, or the scheduler says something becomes due.
        nxt = sched.next_event()
        t_next = min([*(e[0] for e in ends[:1]), *([clock.t + nxt] if nxt is not None else [])],
                     default=horizon)
        assert t_next > clock.t or ends, "nothing runs and nothing becomes due: the loop would stall"
        clock.t = max(t_next, clock.t)
        while ends and ends[0][0] <= clock.t:
            _, name, ok = heapq.heappop(ends)
            s = servers[name]
            s.running = False
            if ok:
                s.last_commit = clock.t
                s.failures = 0
                sched.finished(name)
            else:
                s.failures += 1
                s.eligible_at = max(s.eligible_at, clock.t + min(cap, base * 2 ** (s.failures - 1)))
                sched.finished(name, error="simulated failure")
    assert all(s.last_commit is not None or s.failures for s in servers.values()), "a server never ran"


@settings(max_examples=50, deadline=None)
@given(parallel=st.integers(1, 4), disks=st.integers(1, 10))
def test_a_server_larger_than_the_budget_runs_alone(parallel: int, disks: int) -> None:
    clock = Clock()
    sched = Scheduler(parallel, 10, clock=clock)
    got = sched.pick([Candidate("big", disks, None), Candidate("small", 1, None)])
    assert got[0] == "big"
    assert sched.in_flight <= parallel
    if disks >= parallel:
        assert got == ["big"]
