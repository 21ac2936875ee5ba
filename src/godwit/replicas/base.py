"""The replica-disk interface that the mover writes through.

A replica holds the latest applied cycle and can still be read at the last few recovery points.
How older points are kept is the implementation's business: an undo journal for local files, blob
snapshots for page blobs.

Contract (checked by ``tests/conformance/test_replica_suite.py`` for every implementation):

- ``begin(number, ranges, size)`` prepares to apply cycle ``number``: it grows the disk to
  ``size`` and saves whatever it needs to still serve recovery point ``number - 1`` over
  ``ranges`` (the byte ranges the cycle will overwrite). It MUST be idempotent across a crash:
  when called again for the same ``number`` after a partial apply, it keeps what it saved the
  first time and never saves partially applied data.
- ``write(offset, data)`` and ``zero(offset, length)`` change the live disk; any offset and length
  within ``size`` (implementations align internally). They MAY write behind (both implementations
  do): the caller may reuse ``data`` once ``write`` returns, later calls see the effect of earlier
  ones in order (a later write or zero of the same bytes wins), ``begin``, ``seal`` and ``abort``
  wait for everything queued, and a queued write's failure is raised by a later call.
- ``seal(number)`` makes every write durable (one fsync or flush per disk, not one per write);
  afterwards the live disk *is* recovery point ``number`` and ``points()`` includes it.
- ``release(number)`` forgets recovery point ``number`` (idempotent); the live one cannot be
  released.
- ``open_point(number)`` reads a sealed, unreleased recovery point while later cycles may be
  applied to the live disk; an unknown or released number raises NotFoundError.
- ``abort(number)`` rolls a partial apply of cycle ``number`` back: the live disk returns to the
  last sealed point, bit for bit (used when a pack turns out damaged mid-cycle).
- ``remove()`` deletes the replica and all its points.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class PointReader(ABC):
    """A read-only view of one recovery point."""

    size: int

    @abstractmethod
    def read(self, offset: int, length: int) -> bytes: ...

    def allocated(self) -> list[tuple[int, int]] | None:
        """Ranges that may hold data (everything else reads as zeros), or None if unknown."""
        return None

    def vhd_footer(self) -> bytes | None:
        """The fixed-VHD footer this point already carries (page blobs do), or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        pass

    def __enter__(self) -> PointReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReplicaDisk(ABC):
    description: str = "replica"

    @property
    @abstractmethod
    def size(self) -> int: ...

    @abstractmethod
    def begin(self, number: int, ranges: list[tuple[int, int]], size: int) -> None: ...

    @abstractmethod
    def write(self, offset: int, data: bytes | memoryview) -> None: ...

    @abstractmethod
    def zero(self, offset: int, length: int) -> None: ...

    @abstractmethod
    def seal(self, number: int) -> None: ...

    @abstractmethod
    def release(self, number: int) -> None: ...

    @abstractmethod
    def points(self) -> list[int]: ...

    @abstractmethod
    def open_point(self, number: int) -> PointReader: ...

    @abstractmethod
    def abort(self, number: int) -> None: ...

    @abstractmethod
    def remove(self) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        pass
