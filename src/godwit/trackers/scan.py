"""The scan tracker: every allocated byte may have changed; holes are known zeros.

It knows nothing about the past, so it reports all data as CHANGED (the engine's digest
comparison finds what really changed) and the source's holes (SEEK_DATA, NBD base:allocation)
as ZERO. It never reports UNCHANGED, and has nothing to keep on commit or failure.
"""

from __future__ import annotations

from collections.abc import Iterator

from godwit.sources.base import DiskSource
from godwit.trackers.base import ChangeTracker, Kind, Region, TrackedDisk


class ScanTracker(ChangeTracker):
    name = "scan"

    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]:
        pos = 0
        for ext in source.extents(0, source.size):
            if ext.length <= 0:
                continue
            if ext.offset > pos:  # a reader's gap is treated as data: never skip what is unknown
                yield Region(pos, ext.offset - pos, Kind.CHANGED)
            yield Region(ext.offset, ext.length, Kind.CHANGED if ext.is_data else Kind.ZERO)
            pos = ext.offset + ext.length
        if pos < source.size:
            yield Region(pos, source.size - pos, Kind.CHANGED)
