"""What godwit reports about its state, as typed models: `--json` prints them and the API will
serve them (pydantic v2, so their schema is checked and can be published)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _View(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Event(_View):
    id: int
    ts: float
    level: str
    server: str | None
    disk: int | None
    cycle: int | None
    message: str


class DiskStatus(_View):
    index: int
    spec: str
    format: str
    size: int
    state: str
    error: str | None
    last_cycle: int | None
    bytes_read: int
    bytes_sent: int
    bytes_changed: int
    bytes_stored: int  # sent by cycles still in the cache, not yet applied
    throughput_bps: float | None
    rpo_seconds: float | None = None  # every cycle reads every disk: the server's, per disk for people
    rpo_max_seconds: float | None = None


class CycleStatus(_View):
    number: int
    kind: str
    state: str
    consistency: str | None
    started: float
    committed: float | None
    applied: float | None
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    packs: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float
    bottleneck: str


class NetworkStatus(_View):
    """The data-plane path of a server's last committed cycle, and the last ``network check``."""

    path: str | None = None  # "private endpoint, direct to 10.1.0.5", "internet, via proxy URL", ...
    data_plane: str | None = None
    proxied: bool | None = None
    bytes_sent: int | None = None
    cycle: int | None = None
    last_check: float | None = None  # time.time() of the last network check
    last_check_ok: bool | None = None


class ServerStatus(_View):
    server: str
    state: str
    error: str | None
    last_cycle: int | None
    open_cycle: int | None
    rpo_seconds: float | None
    rpo_max_seconds: float | None = None  # the worst RPO over the last ten commits (and now)
    bytes_stored: int
    throughput_bps: float | None
    latest_recovery_point: int | None
    disks: list[DiskStatus]
    cycles: list[CycleStatus]  # the last ten, oldest first
    network: NetworkStatus = NetworkStatus()
    #: What the running `replicate run` loop's scheduler says of it ("running (delta)", "waiting:
    #: slots full", "backing off after error until T", ...); None when no loop runs.
    schedule: str | None = None


class WaveView(_View):
    name: str
    created: float
    servers: list[str]  # in the order they were given


class ChurnHour(_View):
    hour: int  # of day, in the configured zone
    bytes_changed: int
    cycles: int
    bytes_per_second: float | None


class Prediction(_View):
    made: float
    initial_bytes: int
    initial_seconds: float | None
    final_seconds: float | None
    link_mbps: float


class WindowLogEntry(_View):
    window: str  # "08:00-18:00"
    scope: str  # all | server:NAME | wave:NAME
    kind: str  # cap | blackout
    cap_mbps: float | None
    started: float
    ended: float | None
    bytes: int
    busy_seconds: float
    avg_mbps: float
    max_mbps: float  # the busiest 10-s slot
    kept: bool


class CutoverView(_View):
    id: int
    target: str
    target_kind: str  # server | wave
    at: float
    options: dict[str, object]  # out, format, shutdown_command, parallel
    state: str  # scheduled | running | done | failed | cancelled
    created: float
    result: dict[str, object] | None
