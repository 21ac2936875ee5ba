"""Property tests of the window calendar (config.windows): overlapping windows, windows across
midnight, DST changes in Europe/Berlin (the last Sundays of March and October), blackouts inside
caps; and the planner's minute-by-minute time under such a schedule."""

from __future__ import annotations

import math
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from godwit.config.windows import calendar
from godwit.errors import ConfigError
from godwit.ops import rates

BERLIN = ZoneInfo("Europe/Berlin")
T2026 = datetime(2026, 1, 1, tzinfo=BERLIN).timestamp()
YEAR = 366 * 86400


def _span(a: int, b: int) -> str:
    return f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}"


spans = st.tuples(st.integers(0, 1439), st.integers(1, 1440)).filter(lambda ab: ab[0] != ab[1] % 1440 and
                                                                      ab[0] != ab[1])
windows = st.lists(st.tuples(spans, st.one_of(st.none(), st.integers(1, 500))), min_size=1, max_size=5,
                   unique_by=lambda w: w[0])
instants = st.floats(T2026, T2026 + YEAR, allow_nan=False)


def _cal(ws: list[tuple[tuple[int, int], int | None]], default: float | None = None):  # type: ignore[no-untyped-def]
    return calendar("Europe/Berlin", default, {_span(*s): v for s, v in ws if v is not None},
                    [_span(*s) for s, v in ws if v is None])


@settings(max_examples=300, deadline=None)
@given(windows, instants)
def test_occurrences_contain_the_instant_and_start_at_the_window_start(ws, ts) -> None:  # type: ignore[no-untyped-def]
    cal = _cal(ws)
    for occ in cal.active(ts):
        assert occ.start <= ts < occ.end
        w = occ.window
        length = ((w.end - w.start) % 1440 or 1440) * 60
        start_l, end_l = (datetime.fromtimestamp(x, BERLIN) for x in (occ.start, occ.end))
        shift = (start_l.utcoffset() - end_l.utcoffset()).total_seconds()  # type: ignore[operator]
        start_minute = start_l.hour * 60 + start_l.minute
        end_minute = end_l.hour * 60 + end_l.minute
        if start_minute == w.start and end_minute == w.end % 1440:
            assert occ.end - occ.start == pytest.approx(length + shift)  # DST: an hour longer or shorter
        else:  # its start or end fell into the spring gap (02:00-03:00 does not exist): 03:00 instead
            assert start_l.month == 3 and 180 in (start_minute, end_minute)
            assert 120 <= (w.start if start_minute == 180 else w.end % 1440) < 180


@settings(max_examples=300, deadline=None)
@given(windows, instants, st.one_of(st.none(), st.integers(1, 1000)))
def test_blackouts_win_then_the_first_cap_then_the_default(ws, ts, default) -> None:  # type: ignore[no-untyped-def]
    cal = _cal(ws, default)
    local = datetime.fromtimestamp(math.floor(ts), BERLIN)  # as the calendar: minutes, whole seconds
    minute = local.hour * 60 + local.minute
    covering = [(s, v) for s, v in ws if (s[0] <= minute < s[1] if s[0] < s[1] else
                                          (minute >= s[0] or minute < s[1]))]
    cap = cal.cap(ts)
    if any(v is None for _, v in covering):
        assert cap == 0  # a blackout inside (or overlapping) a cap window
    elif covering:
        caps = [v for _, v in ws if v is not None]
        first = next(v for s, v in ws if v is not None and (s, v) in covering)
        assert cap == first and first in caps
    else:
        assert cap == default


def _at(*args: int) -> float:
    return datetime(*args, tzinfo=BERLIN).timestamp()  # type: ignore[misc]


def test_dst_autumn_and_spring_in_berlin() -> None:
    cal = calendar("Europe/Berlin", None, {"00:00-06:00": 10, "08:00-18:00": 50, "22:00-02:00": 5}, ["02:00-03:00"])
    # 25 October 2026, clocks go back at 03:00 CEST to 02:00 CET: the night is an hour longer.
    night = next(o for o in cal.active(_at(2026, 10, 25, 1, 0)) if o.window.label == "00:00-06:00")
    assert night.end - night.start == 7 * 3600
    day = next(o for o in cal.active(_at(2026, 10, 25, 9, 0)))
    assert day.end - day.start == 10 * 3600
    first_pass = _at(2026, 10, 25, 2, 30)  # 02:30 CEST (fold 0)
    second_pass = first_pass + 3600  # 02:30 again, CET
    assert cal.cap(first_pass) == 0 and cal.cap(second_pass) == 0  # the blackout covers both passes
    (b1,), (b2,) = ([o for o in cal.active(t) if o.window.kind == "blackout"] for t in (first_pass, second_pass))
    assert b1 == b2 and b1.end - b1.start == 2 * 3600
    # 29 March 2026, 02:00 CET jumps to 03:00 CEST: the night is an hour shorter, the blackout never happens.
    spring = next(o for o in cal.active(_at(2026, 3, 29, 1, 0)) if o.window.label == "00:00-06:00")
    assert spring.end - spring.start == 5 * 3600
    before, after = _at(2026, 3, 29, 1, 59), _at(2026, 3, 29, 3, 0)
    assert after - before == 60 and cal.cap(before) == 10 and cal.cap(after) == 10  # the first window wins
    assert all(cal.cap(before + m * 60) != 0 for m in range(-60, 120))
    # Across midnight: 22:00-02:00 starts the evening before.
    late = next(o for o in cal.active(_at(2026, 6, 10, 1, 0)) if o.window.label == "22:00-02:00")
    assert late.start == _at(2026, 6, 9, 22, 0) and late.end == _at(2026, 6, 10, 2, 0)


def test_planner_time_follows_the_schedule_through_a_dst_change() -> None:
    cal = calendar("Europe/Berlin", None, {"00:00-06:00": 8}, ["06:00-24:00"])  # only nights, 1 MB/s
    start = _at(2026, 10, 25, 0, 0)  # the 7-hour night
    sent = rates.bytes_within(86400 + 3600, start, cal.rate_at(), link_mbps=1000)
    assert sent == pytest.approx(7 * 3600 * 1e6)
    secs = rates.transfer_seconds(8 * 3600 * 1e6, start, cal.rate_at(), 1000)
    assert secs == pytest.approx((7 + 18 + 1) * 3600)  # the 7-hour night, 18 hours of blackout, 1 hour


def test_bad_windows_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="not a known time zone"):
        calendar("Mars/Olympus", None, {}, [])
    assert calendar(None, None, {}, ["10:00-10:00"]).cap(T2026 + 10 * 3600) is None  # covers nothing
    with pytest.raises(ConfigError, match="impossible time"):
        calendar(None, None, {"10:00-24:30": 5}, [])
    with pytest.raises(ConfigError, match="unknown key"):
        calendar(None, None, {}, [], {"server:a": {"cap": 3}})


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def test_server_and_wave_caps_hold_their_own_traffic(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Per-server and per-wave caps, and a wave blackout, on a real local store under a fake clock:
    each scope's bytes per second stay at its cap, and the log shows each window."""
    from godwit.stores.local import LocalStore
    from godwit.stores.meter import WindowMeter, WindowRecord
    from godwit.stores.throttle import TokenBucket
    from godwit.stores.windowed import WindowedStore

    cal = calendar("Europe/Berlin", 80, {}, [], {"server:db": {"max_mbps": 8},
                                                  "wave:w": {"schedule": {"09:00-10:00": 16},
                                                             "blackout": ["10:00-10:01"]}})
    clock = FakeClock(_at(2026, 6, 10, 9, 0))
    logged: list[WindowRecord] = []
    scopes = {"db": ("all", "server:db", "wave:w"), "web": ("all", "server:web", "wave:w"), "x": ("all",)}
    bucket = TokenBucket(lambda: cal.cap(clock()), clock=clock, sleep=clock.sleep)
    store = WindowedStore(LocalStore(tmp_path), bucket, cal, lambda k: scopes[k.split("/")[1]],
                          WindowMeter(cal, clock, logged.append), clock=clock, bucket_clock=clock,
                          sleep=clock.sleep)
    blob = bytes(1_000_000)
    t0 = clock()
    for i in range(10):
        store.put(f"servers/db/{i}", blob)  # 10 MB at the server's 8 Mbps (below the wave's 16)
    assert clock() - t0 == pytest.approx(10.0, rel=0.05)
    t0 = clock()
    for i in range(10):
        store.put(f"servers/web/{i}", blob)  # 10 MB at the wave's 16 Mbps
    assert clock() - t0 == pytest.approx(5.0, rel=0.05)
    clock.now = _at(2026, 6, 10, 10, 0, 30)  # inside the wave's blackout: held until 10:01
    store.put("servers/web/late", blob)
    assert clock() >= _at(2026, 6, 10, 10, 1)
    store.put("servers/x/free", blob)  # outside the wave: only the project's 80 Mbps
    store.close()
    by = {(r.scope, r.window): r for r in logged}
    assert by[("wave:w", "09:00-10:00")].bytes == 20_000_000 and by[("wave:w", "09:00-10:00")].kept
    black = by[("wave:w", "10:00-10:01")]
    assert black.kind == "blackout" and black.bytes == 0 and black.kept


def test_a_window_starting_in_the_spring_gap_starts_when_the_gap_ends() -> None:
    """Found by the property above: a blackout "02:01-00:01" on 2026-03-29 (Berlin skips 02:00-03:00)
    was active at 03:00 but its occurrence started at 03:01. It starts at 03:00, as documented."""
    cal = _cal([((121, 1), None)])
    three = datetime(2026, 3, 29, 3, 0, tzinfo=BERLIN).timestamp()
    (occ,) = cal.active(three)
    assert occ.start == three
    assert datetime.fromtimestamp(occ.start, BERLIN).hour == 3 and not cal.active(three - 1)
