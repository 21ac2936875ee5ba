"""Recovery points of a page-blob replica: blob snapshots, and the record of an open cycle.

``seal(n)`` snapshots the blob with ``godwit_point = n`` in the snapshot's own metadata, which
the service stores atomically with the snapshot: a new process lists snapshots to find the
points (:func:`list_points`), and a crash leaves no half-recorded point. Snapshots cost no undo
data: ``begin`` records the cycle's page ranges in a small JSON blob beside the disk
(``NAME.vhd.cycle-N.json``, :class:`CycleRecord`) so that ``abort``, even in another process,
copies exactly those pages back from the last snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from godwit.azure.errors import error_code
from godwit.azure.settings import AzureSettings
from godwit.errors import CorruptObjectError, GodwitError, ReplicaError
from godwit.format import vhd
from godwit.replicas.base import PointReader
from godwit.replicas.pageblob.pages import PAGE

META_SIZE = "godwit_size"
META_UUID = "godwit_uuid"
META_CREATED = "godwit_created"
META_POINT = "godwit_point"

Fail = Callable[[Exception, str], GodwitError]


class SnapshotReader(PointReader):
    """Reads one recovery point (a snapshot) of ``size`` disk bytes."""

    def __init__(self, blob: Any, size: int, settings: AzureSettings, number: int, fail: Fail) -> None:
        self.blob = blob
        self.size = size
        self._settings = settings
        self._number = number
        self._fail = fail

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if offset + length > self.size:
            raise ReplicaError(f"read past the end of recovery point {self._number} ({offset + length} > {self.size})")
        if length == 0:
            return b""
        try:
            data: bytes = self.blob.download_blob(offset=offset, length=length,
                                                  max_concurrency=self._settings.max_concurrency).readall()
            return data
        except Exception as exc:
            raise self._fail(exc, f"reading recovery point {self._number}") from None

    def vhd_footer(self) -> bytes | None:
        """The point's own footer, so a VHD exported from it equals the blob byte for byte."""
        at = vhd.rounded_size(self.size)
        try:
            data: bytes = self.blob.download_blob(offset=at, length=vhd.FOOTER_SIZE).readall()
        except Exception as exc:
            raise self._fail(exc, f"reading the footer of recovery point {self._number}") from None
        return data if len(data) == vhd.FOOTER_SIZE else None

    def allocated(self) -> list[tuple[int, int]] | None:
        try:
            ranges = [(r.start, r.end + 1) for r in self.blob.list_page_ranges() if not r.cleared]
        except Exception as exc:
            raise self._fail(exc, f"listing pages of recovery point {self._number}") from None
        out: list[tuple[int, int]] = []
        for start, end in sorted(ranges):
            end = min(end, self.size)  # the footer and the padding are not disk data
            if start >= end:
                continue
            if out and out[-1][0] + out[-1][1] >= start:
                prev_start, prev_len = out[-1]
                out[-1] = (prev_start, max(prev_start + prev_len, end) - prev_start)
            else:
                out.append((start, end - start))
        return out


def list_points(container: Any, name: str, fail: Fail) -> dict[int, list[Any]]:
    """Point number -> snapshot items of blob ``name`` (oldest first), from the service's listing."""
    found: dict[int, list[Any]] = {}
    try:
        for item in container.list_blobs(name_starts_with=name, include=["snapshots", "metadata"]):
            point = (item.metadata or {}).get(META_POINT)
            if item.name == name and item.snapshot and point is not None and point.isdigit():
                found.setdefault(int(point), []).append(item)
    except Exception as exc:
        raise fail(exc, "listing recovery points") from None
    for items in found.values():
        items.sort(key=lambda i: i.snapshot)
    return found


class CycleRecord:
    """The pages cycle ``number`` may change, saved before its first write (what abort restores)."""

    def __init__(self, service: Any, container: str, blob_name: str, description: str, fail: Fail) -> None:
        self._service = service
        self._container = container
        self._blob_name = blob_name
        self._description = description
        self._fail = fail

    def _client(self, number: int) -> Any:
        return self._service.get_blob_client(self._container, f"{self._blob_name}.cycle-{number:010d}.json")

    def save(self, number: int, ranges: list[tuple[int, int]], old_size: int) -> None:
        """Save the ranges as whole pages, plus the old footer's page. A record already there is
        kept: it was made before any of this cycle's writes."""
        from azure.core.exceptions import ResourceExistsError

        pages = [(off - off % PAGE, -(-(off + n) // PAGE) * PAGE) for off, n in ranges if n > 0]
        if old_size:
            footer = vhd.rounded_size(old_size)
            pages.append((footer, footer + vhd.FOOTER_SIZE))
        merged: list[list[int]] = []
        for lo, hi in sorted(pages):
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        doc = json.dumps({"format": 1, "cycle": number, "old_size": old_size, "ranges": merged},
                         separators=(",", ":")).encode()
        try:
            self._client(number).upload_blob(doc, overwrite=False)
        except ResourceExistsError:
            pass
        except Exception as exc:
            raise self._fail(exc, f"recording cycle {number}") from None

    def read(self, number: int) -> list[tuple[int, int]] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            raw = self._client(number).download_blob().readall()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, f"reading the record of cycle {number}") from None
            return None
        except Exception as exc:
            raise self._fail(exc, f"reading the record of cycle {number}") from None
        try:
            return [(int(lo), int(hi)) for lo, hi in json.loads(raw)["ranges"]]
        except (ValueError, KeyError, TypeError):
            raise CorruptObjectError(f"the record of cycle {number} beside {self._description} is damaged",
                                     hint="the cycle cannot be rolled back; resync the server") from None

    def drop(self, number: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._client(number).delete_blob()
        except ResourceNotFoundError:
            pass
        except Exception as exc:
            raise self._fail(exc, f"deleting the record of cycle {number}") from None

    def prefix(self) -> str:
        """The name prefix of every record of this replica (for removal)."""
        return f"{self._blob_name}.cycle-"
