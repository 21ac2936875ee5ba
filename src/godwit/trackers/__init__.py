"""Change trackers: which regions of a disk changed since the last committed cycle.

``build(name)`` makes the tracker that ``[replication] tracker`` names; the contract every
tracker keeps is in ``godwit.trackers.base``.
"""

from __future__ import annotations

from godwit.errors import ConfigError
from godwit.trackers.base import ChangeTracker, Kind, Region, TrackedDisk
from godwit.trackers.bitmap import BitmapTracker
from godwit.trackers.scan import ScanTracker

TRACKERS: dict[str, type[ChangeTracker]] = {ScanTracker.name: ScanTracker, BitmapTracker.name: BitmapTracker}


def build(name: str) -> ChangeTracker:
    try:
        return TRACKERS[name]()
    except KeyError:
        raise ConfigError(f"[replication] tracker {name!r} is unknown",
                          hint=f"use one of {tuple(TRACKERS)}") from None


__all__ = ["TRACKERS", "BitmapTracker", "ChangeTracker", "Kind", "Region", "ScanTracker", "TrackedDisk", "build"]
