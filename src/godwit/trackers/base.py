"""The change-tracker interface: which regions of a disk may have changed since a base cycle.

Contract (checked for every tracker by ``tests/conformance/test_tracker_suite.py``):

- ``regions(disk, source, base)`` describes the whole disk as it is now: ``Region`` runs in order,
  without gaps or overlaps, from offset 0 to ``source.size``, each one of

  - ``CHANGED``: may differ from the base. The engine reads these bytes, hashes them and sends
    the blocks whose digests differ from the base's. Reporting too much costs reads, never
    correctness.
  - ``ZERO``: reads as zeros now (a hole, an unallocated cluster). Never read; the engine knows
    the digests, and sends a zero run where the base had data.
  - ``UNCHANGED``: holds exactly the bytes it held at the base cycle. Never read: the engine
    copies the base's block digests forward. Reporting a changed byte as unchanged loses it, so
    a tracker that is not sure says CHANGED.

  Regions are in bytes; the engine rounds them to its blocks (a block with any CHANGED byte is
  read, and so is a block mixing ZERO and UNCHANGED).
- ``base`` is the number of the last committed cycle whose block digests the engine holds and
  can use, or None when there is none (the first cycle, digests missing or made with other
  settings). With ``base`` None the tracker reports the whole disk as CHANGED or ZERO; the engine
  reads an UNCHANGED region then anyway. The engine also reads UNCHANGED blocks that a resync
  forced or that lie past the base's end (the disk grew).
- ``committed(disk, cycle)``: the cycle that ``regions`` was asked for is durable (its manifest
  is stored). The tracker may forget what it reported then; the next ``regions`` call has this
  cycle as its base.
- ``failed(disk, cycle)``: the cycle did not commit. The tracker keeps every change it reported
  for the next call (it will be asked again with the same base). A process that is killed never
  calls ``failed``: after a restart, ``regions`` for the same base must again report at least
  everything it reported before.
- ``name`` is what ``[replication] tracker`` in ``godwit.toml`` says to select it. An open cycle
  resumes only with the tracker, block size and hash it was started with.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import ClassVar, NamedTuple

from godwit.sources.base import DiskSource


class Kind(IntEnum):
    ZERO = 0
    CHANGED = 1
    UNCHANGED = 2


class Region(NamedTuple):
    offset: int
    length: int
    kind: Kind


@dataclass(frozen=True)
class TrackedDisk:
    """Which disk a tracker is asked about: its uid (stable for the disk's life), index and path."""
    uid: str
    index: int
    path: Path


class ChangeTracker(ABC):
    name: ClassVar[str]

    @abstractmethod
    def regions(self, disk: TrackedDisk, source: DiskSource, base: int | None) -> Iterator[Region]: ...

    def committed(self, disk: TrackedDisk, cycle: int) -> None:  # noqa: B027 - optional hook
        pass

    def failed(self, disk: TrackedDisk, cycle: int) -> None:  # noqa: B027 - optional hook
        pass
