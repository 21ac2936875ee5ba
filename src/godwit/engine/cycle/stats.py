"""A cycle's figures: the result callers get, the bottleneck, the progress callback's shape."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from godwit.engine.cycle.work import DiskWork
from godwit.state.db import Cycle

ProgressFn = Callable[[int, int, int], None]  # disk index, bytes done, bytes total


@dataclass
class CycleResult:
    server: str
    number: int
    kind: str
    consistency: str
    resumed: bool
    packs_uploaded: int
    packs_reused: int
    bytes_read: int
    bytes_changed: int
    bytes_sent: int
    t_read: float
    t_cpu: float
    t_upload: float
    t_throttle: float
    t_wall: float
    warnings: list[str]
    disks: list[dict[str, int]]

    @property
    def bottleneck(self) -> str:
        return bottleneck(self.t_read, self.t_cpu, self.t_upload, self.t_throttle)


def bottleneck(t_read: float, t_cpu: float, t_upload: float, t_throttle: float) -> str:
    """The stage that took longest: source (reads), cpu (hash + compress), store, or throttle."""
    stages = {"source": t_read, "cpu": t_cpu, "store": t_upload - t_throttle, "throttle": t_throttle}
    name, value = max(stages.items(), key=lambda kv: kv[1])
    return name if value > 0 else "none"


def stage_stats(works: list[DiskWork], packs: int, *, t_read: float, t_cpu: float, t_upload: float,
                t_throttle: float, t_wall: float) -> dict[str, float | int]:
    """The columns a committed cycle's row carries."""
    return {
        "bytes_read": sum(w.bytes_read for w in works),
        "bytes_changed": sum(w.bytes_changed for w in works),
        "bytes_sent": sum(w.bytes_sent for w in works),
        "packs": packs,
        "t_read": t_read, "t_cpu": t_cpu, "t_upload": t_upload, "t_throttle": t_throttle, "t_wall": t_wall,
    }


def make_result(server: str, cyc: Cycle, *, resumed: bool, packs_uploaded: int, reused: int,
                warnings: list[str], works: list[DiskWork]) -> CycleResult:
    return CycleResult(
        server=server, number=cyc.number, kind=cyc.kind, consistency=cyc.consistency or "none",
        resumed=resumed, packs_uploaded=packs_uploaded, packs_reused=reused,
        bytes_read=cyc.bytes_read, bytes_changed=cyc.bytes_changed, bytes_sent=cyc.bytes_sent,
        t_read=cyc.t_read, t_cpu=cyc.t_cpu, t_upload=cyc.t_upload, t_throttle=cyc.t_throttle,
        t_wall=cyc.t_wall, warnings=warnings,
        disks=[{"index": w.disk.idx, "size": w.size, "bytes_read": w.bytes_read,
                "bytes_changed": w.bytes_changed, "bytes_sent": w.bytes_sent} for w in works])
