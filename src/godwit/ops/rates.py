"""Time under a throttle schedule: how long bytes take, how many fit in a span, computed minute by
minute on UTC instants (so a DST change in the schedule's zone is neither skipped nor counted
twice), never from one average rate."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, tzinfo

#: The cap (Mbps) at a local time: None = no cap, 0 = blackout.
RateAt = Callable[[datetime], float | None]

#: Past this the planner says "not under this schedule" instead of a date.
HORIZON_SECONDS = 366 * 86400.0


def _effective(rate_at: RateAt, ts: float, tz: tzinfo | None, link_mbps: float) -> float:
    cap = rate_at(datetime.fromtimestamp(ts, tz))
    return link_mbps if cap is None else min(cap, link_mbps)


def transfer_seconds(nbytes: float, start: float, rate_at: RateAt, link_mbps: float, tz: tzinfo | None = None,
                     horizon: float = HORIZON_SECONDS) -> float | None:
    """Seconds from ``start`` (a timestamp) until ``nbytes`` are sent at min(cap, link); None if
    not within ``horizon`` (a blackout that never ends, a link of 0)."""
    left = float(nbytes)
    if left <= 0:
        return 0.0
    ts = start
    while ts - start < horizon:
        step_end = (ts // 60 + 1) * 60  # the schedule's windows change on whole minutes
        bps = _effective(rate_at, ts, tz, link_mbps) * 1e6 / 8
        fits = bps * (step_end - ts)
        if bps > 0 and fits >= left:
            return ts + left / bps - start
        left -= fits
        ts = step_end
    return None


def bytes_within(seconds: float, start: float, rate_at: RateAt, link_mbps: float, tz: tzinfo | None = None) -> float:
    """How many bytes min(cap, link) lets through from ``start`` over ``seconds``."""
    total, ts, end = 0.0, start, start + seconds
    while ts < end:
        step_end = min((ts // 60 + 1) * 60, end)
        total += _effective(rate_at, ts, tz, link_mbps) * 1e6 / 8 * (step_end - ts)
        ts = step_end
    return total


def window_rate(business: tuple[int, int], business_mbps: float, other_mbps: float | None) -> RateAt:
    """A two-window schedule: ``business`` (start, end minutes; may wrap midnight) at one cap, the
    rest at another (None: uncapped)."""
    start, end = business

    def rate(when: datetime) -> float | None:
        m = when.hour * 60 + when.minute
        inside = start <= m < end if start <= end else (m >= start or m < end)
        return business_mbps if inside else other_mbps

    return rate


def least_off_hours_cap(nbytes: float, start: float, deadline: float, business: tuple[int, int],
                        business_mbps: float, link_mbps: float, tz: tzinfo | None = None) -> float | None:
    """The lowest cap outside business hours (in whole Mbps) that still sends ``nbytes`` by the
    deadline with business hours held at ``business_mbps``; None if even the full link cannot."""
    span = deadline - start

    def fits(cap: float) -> bool:
        return bytes_within(span, start, window_rate(business, business_mbps, cap), link_mbps, tz) >= nbytes

    if span <= 0 or not fits(link_mbps):
        return None
    lo, hi = 1, max(1, int(link_mbps + 0.999))  # 0 would be a blackout, not a cap
    while lo < hi:  # the smallest whole cap that fits
        mid = (lo + hi) // 2
        if fits(float(mid)):
            hi = mid
        else:
            lo = mid + 1
    return float(lo)
