"""The source-disk interface.

Contract (checked by ``tests/conformance/test_source_suite.py`` for every reader):

- ``size`` is the virtual size in bytes, fixed for the life of the object.
- ``read_into(offset, buf)`` fills ``buf`` with the bytes at ``offset``; reads past ``size`` are
  an error. It may be called from several threads at once.
- ``read_many(pieces)`` does the same for several ``(offset, buf)`` pieces; a reader that can keep
  several requests in flight (NBD) overrides it, so that many small reads cost one wait.
- ``extents(offset, length)`` yields ``(offset, length, is_data)`` runs covering the range
  exactly, in order; a run with ``is_data=False`` reads as zeros (a hole or an unallocated
  cluster) and need not be read. A reader that cannot tell reports everything as data.
- ``consistency`` is ``"crash"`` when reads see one frozen point in time (a snapshot) and
  ``"none"`` otherwise; ``warnings`` says why, for people.
- ``close`` releases everything (helper processes, snapshots, sockets) and is idempotent.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import NamedTuple, Self


class Extent(NamedTuple):
    offset: int
    length: int
    is_data: bool


class DiskSource(ABC):
    size: int
    consistency: str = "none"
    description: str = "disk"

    def __init__(self) -> None:
        self.warnings: list[str] = []

    @abstractmethod
    def read_into(self, offset: int, buf: memoryview) -> None: ...

    def read_many(self, pieces: Sequence[tuple[int, memoryview]]) -> None:
        for offset, buf in pieces:
            self.read_into(offset, buf)

    def extents(self, offset: int, length: int) -> Iterator[Extent]:
        yield Extent(offset, length, True)

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
