"""Which servers' cycles run now: the appliance loop's budget and priority rule (pure logic).

The loop tells the scheduler which servers are enabled (``Candidate``), asks ``pick`` which to start,
and reports each end with ``finished``. Nothing here does I/O or reads a clock of its own: the
clock is injected, so tests and the property test drive it with a fake one.

The rule, in the spirit of the reference appliance's priority queue (docs/architecture.md, "The
scheduler"):

- A cycle is per server (all its disks at once), and counts its disks against ``parallel_disks``.
  A server with more disks than the budget counts as the whole budget (it runs alone).
- A delta is due ``interval`` seconds after its last start (``--continuous``: ``min_interval``).
  Due deltas go first, the server whose last committed cycle is oldest first.
- An initial replication takes only the slots deltas leave, and while any server has a committed
  cycle (deltas exist), initials hold at most ``parallel_disks - reserve`` slots, so a delta that
  becomes due finds one free without waiting for a long initial to end.
- A cycle that waited longer than ``starve_after`` seconds is served before any other (oldest wait
  first), and nothing ranked after it starts until it fits: neither an initial nor a large server
  is starved forever by a stream of small deltas.
- A failed cycle backs off exponentially (``backoff_base`` doubled per consecutive failure, capped
  at ``backoff_cap``) without holding any slot; a success resets it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from godwit.config.model import ReplicationConfig

#: The first retry after an error waits this long (seconds), doubling per consecutive failure ...
BACKOFF_BASE = 15.0
#: ... up to this.
BACKOFF_CAP = 900.0


def _at(t: float) -> str:
    """A time of the clock for a person (UTC; the loop's clock is time.time)."""
    return time.strftime("%H:%M:%S UTC", time.gmtime(t))


@dataclass(frozen=True)
class Candidate:
    """One enabled server as the loop sees it at a pick."""

    name: str
    disks: int
    #: When its newest committed cycle committed (the clock's time base); None: no committed
    #: cycle yet, so its next cycle is the initial replication.
    last_commit: float | None

    @property
    def initial(self) -> bool:
        return self.last_commit is None


@dataclass
class _Track:
    """What the scheduler remembers of one server between picks."""

    last_start: float | None = None
    due_since: float | None = None  # when it became due and not yet started (its wait)
    failures: int = 0
    backoff_until: float | None = None
    last_error: str | None = None
    runs: int = 0
    running_since: float | None = None
    running_cost: int = 0
    running_initial: bool = False


@dataclass(frozen=True)
class Slot:
    """One server's place in the schedule, for status."""

    server: str
    state: str  # running, waiting, backoff, idle, done
    reason: str


@dataclass
class Scheduler:
    parallel_disks: int
    interval: float
    clock: Callable[[], float]
    once: bool = False  # every server at most one cycle (``replicate run --once``)
    starve_after: float | None = None  # default: max(interval, 60 s)
    backoff_base: float = BACKOFF_BASE
    backoff_cap: float = BACKOFF_CAP
    _tracks: dict[str, _Track] = field(default_factory=dict, repr=False)
    _reasons: dict[str, str] = field(default_factory=dict, repr=False)
    _known: dict[str, Candidate] = field(default_factory=dict, repr=False)

    @classmethod
    def configured(cls, rep: ReplicationConfig, interval: float, *, clock: Callable[[], float],
                   once: bool = False) -> Scheduler:
        """The scheduler `[replication]` asks for (budget, backoff, starvation bound)."""
        return cls(rep.parallel_disks, interval, clock=clock, once=once, starve_after=rep.starve_after_seconds,
                   backoff_base=rep.error_backoff_seconds, backoff_cap=rep.error_backoff_max_seconds)

    def __post_init__(self) -> None:
        if self.parallel_disks < 1:
            raise ValueError("parallel_disks must be at least 1")
        if self.starve_after is None:
            self.starve_after = max(self.interval, 60.0)

    # -- the budget ------------------------------------------------------------------------------

    @property
    def reserve(self) -> int:
        """Slots initials leave to deltas while deltas exist (none with a budget of one)."""
        return 0 if self.parallel_disks == 1 else max(1, math.ceil(self.parallel_disks / 4))

    def cost(self, c: Candidate) -> int:
        return max(1, min(c.disks, self.parallel_disks))

    @property
    def in_flight(self) -> int:
        """Disks of the cycles running now."""
        return sum(t.running_cost for t in self._tracks.values() if t.running_since is not None)

    def running(self) -> list[str]:
        return [n for n, t in self._tracks.items() if t.running_since is not None]

    # -- picking ---------------------------------------------------------------------------------

    def pick(self, candidates: Iterable[Candidate]) -> list[str]:
        """The servers whose cycle starts now (marked running: call ``finished`` for each)."""
        now = self.clock()
        cands = list(candidates)
        self._known = {c.name: c for c in cands}
        for name in [n for n in self._tracks if n not in self._known and self._tracks[n].running_since is None]:
            del self._tracks[name]  # no longer enabled: forget it (its backoff too)
        self._reasons = {}
        due: list[Candidate] = []
        for c in cands:
            t = self._tracks.setdefault(c.name, _Track())
            if t.running_since is not None:
                self._reasons[c.name] = f"running ({'initial' if t.running_initial else 'delta'})"
                continue
            if t.backoff_until is not None and now < t.backoff_until:
                t.due_since = None
                self._reasons[c.name] = f"backing off after error until {_at(t.backoff_until)}"
                continue
            next_at = self._next_start(t)
            if next_at is None:
                self._reasons[c.name] = "done (--once)"
                continue
            if now < next_at:
                t.due_since = None
                self._reasons[c.name] = f"idle: next cycle due at {_at(next_at)}"
                continue
            if t.due_since is None:
                t.due_since = max(next_at, t.backoff_until or next_at) if t.last_start is not None else now
            due.append(c)
        return self._allocate(due, now)

    def _next_start(self, t: _Track) -> float | None:
        if t.last_start is None:
            return -math.inf
        if self.once:
            return None
        return t.last_start + self.interval

    def _allocate(self, due: list[Candidate], now: float) -> list[str]:
        assert self.starve_after is not None
        starve_after = self.starve_after

        def waited(c: Candidate) -> float:
            w = self._tracks[c.name].due_since
            return now - w if w is not None else 0.0

        starving = sorted((c for c in due if waited(c) > starve_after), key=lambda c: (-waited(c), c.name))
        rest = [c for c in due if waited(c) <= starve_after]
        deltas = sorted((c for c in rest if not c.initial), key=lambda c: (c.last_commit or 0.0, c.name))
        initials = sorted((c for c in rest if c.initial), key=lambda c: (-waited(c), c.name))
        free = self.parallel_disks - self.in_flight
        deltas_exist = any(not k.initial for k in self._known.values())
        initial_cap = self.parallel_disks - (self.reserve if deltas_exist else 0)
        initial_used = sum(t.running_cost for t in self._tracks.values()
                           if t.running_since is not None and t.running_initial)
        picked: list[str] = []
        blocked = False
        for c in [*starving, *deltas, *initials]:
            cost = self.cost(c)
            if blocked:
                self._reasons[c.name] = "waiting: an older wait is served first"
                continue
            if cost > free:
                if c in starving:
                    blocked = True  # hold what frees up for it: nothing ranked after it starts
                    self._reasons[c.name] = f"waiting: slots full (needs {cost}, waited {waited(c):.0f}s; next)"
                else:
                    self._reasons[c.name] = "waiting: slots full"
                continue
            if c.initial and c not in starving and initial_used > 0 and initial_used + cost > initial_cap:
                self._reasons[c.name] = "initial: yields to deltas"
                continue
            picked.append(c.name)
            free -= cost
            if c.initial:
                initial_used += cost
            self._start(c, now)
        return picked

    def _start(self, c: Candidate, now: float) -> None:
        t = self._tracks[c.name]
        t.last_start = now
        t.due_since = None
        t.running_since = now
        t.running_cost = self.cost(c)
        t.running_initial = c.initial
        t.runs += 1
        self._reasons[c.name] = f"running ({'initial' if c.initial else 'delta'})"

    def finished(self, name: str, *, error: str | None = None) -> None:
        """The cycle of ``name`` ended (committed when ``error`` is None)."""
        t = self._tracks.setdefault(name, _Track())
        now = self.clock()
        t.running_since = None
        t.running_cost = 0
        t.running_initial = False
        if error is None:
            t.failures = 0
            t.backoff_until = None
            t.last_error = None
            self._reasons[name] = "idle: committed"
        else:
            t.failures += 1
            t.last_error = error
            t.backoff_until = now + min(self.backoff_cap, self.backoff_base * 2 ** (t.failures - 1))
            self._reasons[name] = f"backing off after error until {_at(t.backoff_until)}"

    # -- what the loop and status want to know ---------------------------------------------------------

    def next_event(self) -> float | None:
        """Seconds until a server that is not running becomes due, leaves its backoff, or (due and
        waiting for slots) starts starving; None: nothing until a running cycle ends."""
        now = self.clock()
        times: list[float] = []
        assert self.starve_after is not None
        for name, t in self._tracks.items():
            if t.running_since is not None or name not in self._known:
                continue
            if t.due_since is not None:  # due, waiting for slots: a cycle's end wakes it
                if t.due_since + self.starve_after > now:
                    times.append(t.due_since + self.starve_after - now)
                continue
            at = self._next_start(t)
            if at is None:
                continue
            if t.backoff_until is not None:
                at = max(at, t.backoff_until)
            times.append(max(0.0, at - now))
        return min(times) if times else None

    def idle(self) -> bool:
        """Nothing runs, and (``once``) every known server has had its cycle or backs off."""
        if self.running():
            return False
        if not self.once:
            return False
        return all(t.runs > 0 or t.backoff_until is not None for n, t in self._tracks.items() if n in self._known)

    def slots(self) -> list[Slot]:
        """Every known server's place: running, waiting (and why), backing off, or idle."""
        out: list[Slot] = []
        for name in sorted(self._known):
            t = self._tracks.get(name, _Track())
            reason = self._reasons.get(name, "waiting: not yet scheduled")
            if t.running_since is not None:
                state = "running"
            elif t.backoff_until is not None and self.clock() < t.backoff_until:
                state = "backoff"
                reason = f"backing off after error until {_at(t.backoff_until)}"
            elif reason.startswith("waiting") or reason.startswith("initial"):
                state = "waiting"
            elif reason.startswith("done"):
                state = "done"
            else:
                state = "idle"
            out.append(Slot(name, state, reason))
        return out
