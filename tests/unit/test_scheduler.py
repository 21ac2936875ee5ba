"""The appliance loop's scheduler: budget, priority, initials yielding, backoff (fake clock)."""

from __future__ import annotations

import pytest

from godwit.engine.scheduler import Candidate, Scheduler


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def delta(name: str, last: float, disks: int = 1) -> Candidate:
    return Candidate(name, disks, last)


def initial(name: str, disks: int = 1) -> Candidate:
    return Candidate(name, disks, None)


def test_slots_count_disks_and_never_overflow() -> None:
    clock = Clock()
    s = Scheduler(4, 60, clock=clock)
    got = s.pick([delta("a", 1, disks=3), delta("b", 2, disks=2), delta("c", 3, disks=1)])
    assert got == ["a", "c"]  # b (2 disks) does not fit beside a (3); c (1) does
    assert s.in_flight == 4
    assert s.pick([delta("a", 1, 3), delta("b", 2, 2), delta("c", 3)]) == []  # running, full
    reasons = {x.server: x.reason for x in s.slots()}
    assert reasons["b"] == "waiting: slots full"
    s.finished("a")
    assert s.pick([delta("a", 5, 3), delta("b", 2, 2), delta("c", 3)]) == ["b"]


def test_oldest_recovery_point_first() -> None:
    s = Scheduler(1, 60, clock=Clock())
    cands = [delta("new", 900), delta("old", 100), delta("mid", 500)]
    assert s.pick(cands) == ["old"]
    s.finished("old")
    assert s.pick([delta("new", 900), delta("old", 1000), delta("mid", 500)]) == ["mid"]


def test_a_server_runs_one_cycle_at_a_time_and_waits_its_interval() -> None:
    clock = Clock()
    s = Scheduler(8, 60, clock=clock)
    assert s.pick([delta("a", 1)]) == ["a"]
    assert s.pick([delta("a", 1)]) == []  # still running
    s.finished("a")
    clock.t += 30
    assert s.pick([delta("a", 1030)]) == []
    assert s.next_event() == pytest.approx(30)
    clock.t += 30
    assert s.pick([delta("a", 1030)]) == ["a"]  # min_interval after its last start


def test_initials_yield_to_deltas_but_keep_going() -> None:
    clock = Clock()
    s = Scheduler(4, 60, clock=clock)  # reserve: 1 slot for deltas while deltas exist
    got = s.pick([initial("i1"), initial("i2"), initial("i3"), initial("i4"), initial("i5"), delta("d", 1)])
    assert got[0] == "d"  # a due delta goes before every initial
    assert got == ["d", "i1", "i2", "i3"]
    s.finished("d")
    s.finished("i1")  # i1 now has a commit: a delta server
    clock.t += 1
    # Two slots are free, but deltas exist: initials hold at most 3 of the 4, even with none due.
    got = s.pick([delta("i1", 1001), initial("i2"), initial("i3"), initial("i4"), initial("i5"), delta("d", 1001)])
    assert got == ["i4"]
    assert {x.server: x.reason for x in s.slots()}["i5"] == "initial: yields to deltas"
    s.finished("i2")
    assert s.pick([delta("i1", 1001), delta("i2", 1001), initial("i3"), initial("i5"), delta("d", 1001)]) == ["i5"]


def test_without_deltas_initials_take_every_slot() -> None:
    s = Scheduler(4, 60, clock=Clock())
    assert len(s.pick([initial(f"i{n}") for n in range(6)])) == 4


def test_a_big_initial_alone_still_runs() -> None:
    """An initial with more disks than the budget runs alone instead of never."""
    s = Scheduler(2, 60, clock=Clock())
    assert s.pick([initial("big", disks=5)]) == ["big"]
    assert s.in_flight == 2


def test_a_starving_initial_is_served_before_new_deltas() -> None:
    clock = Clock()
    s = Scheduler(1, 10, clock=clock, starve_after=30)
    assert s.pick([delta("d", 1), initial("i")]) == ["d"]
    for _ in range(4):  # d is due again at every finish and would win forever by the plain rule
        clock.t += 10
        s.finished("d")
        got = s.pick([delta("d", clock.t), initial("i")])
        if got == ["i"]:
            break
        assert got == ["d"]
    else:
        pytest.fail("the initial never ran")
    assert clock.t - 1000 <= 40  # served within starve_after plus one cycle


def _failing_waits(s: Scheduler, clock: Clock, name: str, n: int) -> list[float]:
    """How long each of ``n`` consecutive failures of ``name`` made its next cycle wait."""
    waits = []
    for _ in range(n):
        start = clock.t
        while s.pick([delta(name, 1)]) != [name]:
            clock.t += 1
        waits.append(clock.t - start)
        s.finished(name, error="still gone")
    return waits


def test_error_backs_off_exponentially_without_blocking_others() -> None:
    clock = Clock()
    s = Scheduler(1, 5, clock=clock, backoff_base=10, backoff_cap=25)
    assert s.pick([delta("bad", 1), delta("good", 2)]) == ["bad"]
    s.finished("bad", error="disk gone")
    assert s.pick([delta("bad", 1), delta("good", 2)]) == ["good"]  # its slot went to the other
    assert any(x.state == "backoff" and "backing off after error until" in x.reason
               for x in s.slots() if x.server == "bad")
    s.finished("good")
    waits = _failing_waits(s, clock, "bad", 4)
    assert waits == [10, 20, 25, 25]  # doubled, capped
    while s.pick([delta("bad", 1)]) != ["bad"]:
        clock.t += 1
    s.finished("bad")  # a success resets the backoff
    clock.t += 5
    assert s.pick([delta("bad", clock.t)]) == ["bad"]


def test_once_runs_each_server_once_then_is_idle() -> None:
    clock = Clock()
    s = Scheduler(2, 60, clock=clock, once=True)
    cands = [delta("a", 1), delta("b", 2), delta("c", 3)]
    assert s.pick(cands) == ["a", "b"]
    assert not s.idle()
    s.finished("a")
    s.finished("b", error="x")
    assert s.pick(cands) == ["c"]
    s.finished("c")
    clock.t += 3600
    assert s.pick(cands) == []
    assert s.idle()


def test_a_server_no_longer_enabled_is_forgotten() -> None:
    s = Scheduler(2, 60, clock=Clock())
    s.pick([delta("a", 1)])
    s.finished("a", error="x")
    s.pick([delta("b", 1)])
    assert [x.server for x in s.slots()] == ["b"]


def test_a_budget_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Scheduler(0, 60, clock=Clock())


def test_parallel_disks_is_configured_and_validated() -> None:
    from godwit.config.model import default_parallel_disks, parse
    from godwit.errors import ConfigError

    assert parse({}).replication.parallel_disks == default_parallel_disks() >= 2
    assert parse({"replication": {"parallel_disks": 7}}).replication.parallel_disks == 7
    for bad in (0, 201, "4", True):
        with pytest.raises(ConfigError, match="parallel_disks") as info:
            parse({"replication": {"parallel_disks": bad}})
        assert bad in (0, 201) or "must be" in info.value.message
    with pytest.raises(ConfigError) as info:
        parse({"replication": {"parallel_disks": 0}})
    assert info.value.hint and "default" in info.value.hint


def test_backoff_and_starvation_bound_come_from_the_config() -> None:
    from godwit.config.model import parse
    from godwit.errors import ConfigError

    rep = parse({"replication": {"error_backoff_seconds": 2, "error_backoff_max_seconds": 5,
                                 "starve_after_seconds": 30, "parallel_disks": 3}}).replication
    clock = Clock()
    s = Scheduler.configured(rep, 1, clock=clock)
    assert (s.parallel_disks, s.starve_after) == (3, 30.0)
    assert s.pick([delta("bad", 1)]) == ["bad"]
    s.finished("bad", error="disk gone")
    waits = _failing_waits(s, clock, "bad", 4)
    assert waits == [2, 4, 5, 5]  # the configured base, doubled, capped
    assert Scheduler.configured(parse({}).replication, 600, clock=clock).starve_after == 600.0  # max(interval, 60)
    for bad in ({"error_backoff_seconds": 0}, {"error_backoff_seconds": 10, "error_backoff_max_seconds": 5},
                {"starve_after_seconds": -1}, {"starve_after_seconds": "1"}):
        with pytest.raises(ConfigError, match="replication"):
            parse({"replication": bad})
