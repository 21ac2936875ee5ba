"""The rows of the state database as typed, immutable values (what repositories return)."""

from __future__ import annotations

from dataclasses import dataclass

INT64_MAX = 2**63 - 1


def fits_int64(n: int) -> bool:
    """Whether ``n`` can be a database integer at all (a number beyond it names no row)."""
    return -INT64_MAX - 1 <= n <= INT64_MAX


@dataclass(frozen=True)
class Server:
    id: int
    uid: str
    name: str
    state: str
    error: str | None


@dataclass(frozen=True)
class Disk:
    id: int
    server_id: int
    idx: int
    uid: str
    spec: str
    format: str
    size: int
    state: str
    error: str | None


@dataclass(frozen=True)
class Cycle:
    id: int
    server_id: int
    number: int
    kind: str
    state: str
    consistency: str | None
    started: float
    committed: float | None
    applied: float | None
    manifest_key: str | None
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    packs: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float


@dataclass(frozen=True)
class RecoveryPoint:
    id: int
    server_id: int
    number: int
    sealed: float
    consistency: str
    disk_sizes: list[int]
    state: str


@dataclass(frozen=True)
class MigrationRecord:
    id: int
    server_id: int
    kind: str
    recovery_point: int
    format: str
    out_dir: str
    files: list[str]
    created: float
    state: str


@dataclass(frozen=True)
class CycleDisk:
    cycle_id: int
    disk_id: int
    size: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    extents: int
