"""A replica disk in an Azure page blob: a fixed VHD that Azure can turn into a managed disk.

Layout: the disk, zero-padded up to a whole MiB, then the 512-byte VHD footer (``godwit.format.vhd``);
the blob is ``rounded_size + 512`` bytes. Writes go out as aligned Put Page calls of at most
4 MiB, several at once, through a write-behind queue (``queue``); runs of zeros become Clear Page
calls (the blob stays sparse) and partial edge pages are read, patched and written back
(``pages``). ``seal``, ``begin`` and ``abort`` wait for everything queued (``seal`` is where the
contract needs it). Recovery points are blob snapshots, and ``abort`` restores the pages a cycle
recorded from the last one (``points``). (Azure restores a whole snapshot by copying it over its
base blob, but Azurite then shares pages between the two, so the next write changes the snapshot
too; and Azurite ignores page-range diffs. Per-range restore works on both.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from godwit.azure.clients import service_client
from godwit.azure.errors import error_code, map_error
from godwit.azure.settings import CONNECTION_KEYS, AzureSettings, parse_options
from godwit.errors import GodwitError, NotFoundError, ReplicaError
from godwit.format import vhd
from godwit.replicas.base import PointReader, ReplicaDisk
from godwit.replicas.pageblob.pages import MAX_PUT, Pages
from godwit.replicas.pageblob.points import (
    META_CREATED,
    META_POINT,
    META_SIZE,
    META_UUID,
    CycleRecord,
    SnapshotReader,
    list_points,
)
from godwit.replicas.pageblob.queue import WriteQueue

if TYPE_CHECKING:
    from godwit.network.route import Router

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

REPLICA_KEYS = CONNECTION_KEYS | {"max_concurrency", "validate_content"}
REPLICA_CONCURRENCY = 4  # Put Page requests in flight (FIELD-NOTES: 4 threads beat more on Azurite)


class PageBlobReplica(ReplicaDisk):
    """One replica disk in one page blob; see the module docstring. One writer thread at a time."""

    def __init__(self, blob: Any, settings: AzureSettings, *, service: Any) -> None:
        self._blob = blob
        self._service = service
        self.settings = settings
        self.description = f"azure page blob {settings.account}/{settings.container}/{blob.blob_name}"
        validate = settings.validate_content if settings.validate_content != "none" else None
        self._pages = Pages(blob, validate)
        self._queue = WriteQueue(settings.max_concurrency, self._fail)
        self._record = CycleRecord(service, settings.container, blob.blob_name, self.description, self._fail)
        self._size: int | None = None
        self._uuid = os.urandom(16)
        self._created = int(time.time())

    # -- helpers ------------------------------------------------------------------------------------

    def _fail(self, exc: Exception, what: str) -> GodwitError:
        return map_error(exc, self.settings, what, base=ReplicaError)

    def _properties(self) -> Any:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            return self._blob.get_blob_properties()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, "opening the replica") from None
            return None
        except Exception as exc:
            raise self._fail(exc, "opening the replica") from None

    def _load(self) -> int:
        """The disk size, read from the blob the first time (0 when there is no blob yet)."""
        if self._size is None:
            props = self._properties()
            if props is None:
                self._size = 0
            elif META_SIZE in (props.metadata or {}):
                meta = props.metadata
                self._size = int(meta[META_SIZE])
                self._uuid = bytes.fromhex(meta.get(META_UUID, self._uuid.hex()))
                self._created = int(meta.get(META_CREATED, self._created))
            else:
                self._size = max(0, int(props.size) - vhd.FOOTER_SIZE)
        return self._size

    def _meta(self, size: int) -> dict[str, str]:
        return {META_SIZE: str(size), META_UUID: self._uuid.hex(), META_CREATED: str(self._created)}

    def _footer(self, size: int) -> bytes:
        return vhd.footer(vhd.rounded_size(size), uuid=self._uuid, timestamp=self._created)

    def _check_range(self, offset: int, length: int) -> None:
        size = self._load()
        if offset < 0 or length < 0 or offset + length > size:
            raise ReplicaError(f"range {offset}+{length} is outside {self.description} ({size} bytes)",
                               hint="call begin() with the disk size first")

    def _snapshots(self) -> dict[int, list[Any]]:
        container = self._service.get_container_client(self.settings.container)
        return list_points(container, self._blob.blob_name, self._fail)

    def _snapshot_client(self, item: Any) -> Any:
        return self._service.get_blob_client(self.settings.container, self._blob.blob_name, snapshot=item.snapshot)

    def flush(self) -> None:
        """Wait for every queued write; raise the first that failed."""
        self._queue.flush()

    # -- the ReplicaDisk interface ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._load()

    def begin(self, number: int, ranges: list[tuple[int, int]], size: int) -> None:
        if size <= 0:
            raise ReplicaError(f"cannot make {self.description} {size} bytes long")
        self.flush()
        if number in self._snapshots():
            return  # already sealed: re-applying it is harmless and there is nothing to prepare
        old = self._load()
        length = vhd.rounded_size(size) + vhd.FOOTER_SIZE
        if old and size < old:
            raise ReplicaError(f"cannot shrink {self.description} from {old} to {size} bytes",
                               hint="a source disk that shrank needs a new replica")
        props = self._properties()
        self._record.save(number, ranges, old)
        try:
            if props is None:
                self._blob.create_page_blob(length, metadata=self._meta(size))
            else:
                if int(props.size) != length:
                    self._blob.resize_blob(length)
                old_footer = vhd.rounded_size(old)
                if old and old_footer < vhd.rounded_size(size):
                    # The old footer now lies inside the disk, where the disk must read zeros.
                    tail = self._blob.download_blob(offset=old_footer, length=vhd.FOOTER_SIZE).readall()
                    if tail[:8] == vhd.COOKIE:
                        self._blob.clear_page(offset=old_footer, length=vhd.FOOTER_SIZE)
            self._blob.upload_page(self._footer(size), offset=vhd.rounded_size(size), length=vhd.FOOTER_SIZE)
            # Last: a crash before this leaves the old size recorded, and begin() redoes the steps.
            if props is not None and (props.metadata or {}).get(META_SIZE) != str(size):
                self._blob.set_blob_metadata(self._meta(size))
        except Exception as exc:
            raise self._fail(exc, f"preparing cycle {number}") from None
        self._size = size

    def write(self, offset: int, data: bytes | memoryview) -> None:
        # The caller may reuse a buffer once write() returns; bytes cannot change under the queue.
        view = memoryview(data if isinstance(data, bytes) else bytes(data)).cast("B")
        self._check_range(offset, len(view))
        start, stop, jobs = self._pages.edges(offset, len(view), view)
        jobs += self._pages.aligned(start, view[start - offset:stop - offset])
        self._queue.submit(jobs, f"writing {len(view)} bytes at {offset}")

    def zero(self, offset: int, length: int) -> None:
        # Past the end reads as zeros already: clamp, as the local replica does.
        length = max(0, min(length, self._load() - offset))
        self._check_range(offset, length)
        start, stop, jobs = self._pages.edges(offset, length, None)
        if stop > start:
            jobs.append(self._pages.clear(start, stop - start))
        self._queue.submit(jobs, f"zeroing {length} bytes at {offset}")

    def seal(self, number: int) -> None:
        self.flush()  # every queued write answered by the service: durable
        if number in self._snapshots():
            return
        size = self._load()
        try:
            self._blob.create_snapshot(metadata={**self._meta(size), META_POINT: str(number)})
        except Exception as exc:
            raise self._fail(exc, f"sealing recovery point {number}") from None
        self._record.drop(number)

    def release(self, number: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        found = self._snapshots()
        if number not in found:
            return
        if number == max(found):
            raise ReplicaError(f"recovery point {number} is the live disk of {self.description} and cannot be "
                               "released", hint="release it after a later cycle is sealed")
        for item in found[number]:
            try:
                self._snapshot_client(item).delete_blob()
            except ResourceNotFoundError:
                continue
            except Exception as exc:
                raise self._fail(exc, f"releasing recovery point {number}") from None

    def points(self) -> list[int]:
        return sorted(self._snapshots())

    def open_point(self, number: int) -> PointReader:
        return self.snapshot_reader(number)

    def snapshot_reader(self, number: int) -> SnapshotReader:
        """The reader of recovery point ``number``, with its snapshot's blob client."""
        found = self._snapshots()
        items = found.get(number)
        if not items:
            available = f" (available: {', '.join(map(str, sorted(found)))})" if found else ""
            raise NotFoundError(f"recovery point {number} does not exist on {self.description}{available}")
        item = items[-1]
        size = int((item.metadata or {}).get(META_SIZE, self._load()))
        return SnapshotReader(self._snapshot_client(item), size, self.settings, number, self._fail)

    def abort(self, number: int) -> None:
        """Put the live blob back to the last sealed point, bit for bit: the pages of the ranges
        ``begin`` recorded are copied back from that point's snapshot, then size and metadata."""
        from azure.core.exceptions import ResourceNotFoundError

        self._queue.drain()
        found = self._snapshots()
        if number in found:
            return
        record = self._record.read(number)
        if record is None:
            return  # begin() recorded nothing, so it changed nothing
        what = f"rolling back cycle {number}"
        if not found:
            # Nothing was ever sealed: the last sealed state is no disk at all.
            try:
                self._blob.delete_blob(delete_snapshots="include")
            except ResourceNotFoundError:
                pass
            except Exception as exc:
                raise self._fail(exc, what) from None
            self._record.drop(number)
            self._size = 0
            return
        item = found[max(found)][-1]
        meta = {k: v for k, v in (item.metadata or {}).items() if k != META_POINT}
        length = int(item.size)
        snap = self._snapshot_client(item)
        try:
            for lo, hi in record:
                for p in range(lo, min(hi, length), MAX_PUT):
                    q = min(p + MAX_PUT, hi, length)
                    data = snap.download_blob(offset=p, length=q - p).readall()
                    self._queue.submit([self._pages.put_or_clear(p, data)], what)
            self.flush()
            if int(self._blob.get_blob_properties().size) != length:
                self._blob.resize_blob(length)
            self._blob.set_blob_metadata(meta)
        except GodwitError:
            raise
        except Exception as exc:
            raise self._fail(exc, what) from None
        self._record.drop(number)
        self._size = int(meta.get(META_SIZE, self._size or 0))

    def remove(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        self._queue.drain()
        container = self._service.get_container_client(self.settings.container)
        try:
            for name in list(container.list_blob_names(name_starts_with=self._record.prefix())):
                with contextlib.suppress(ResourceNotFoundError):
                    container.delete_blob(name)
            self._blob.delete_blob(delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, "removing the replica") from None
        except Exception as exc:
            raise self._fail(exc, "removing the replica") from None
        self._size = 0

    def close(self) -> None:
        # Unsealed writes that failed need no report here: without seal() the cycle is not applied.
        self._queue.close()
        with contextlib.suppress(Exception):
            self._service.close()


def open_pageblob_replica(options: dict[str, Any], root: Path, name: str,
                          router: Router | None = None) -> PageBlobReplica:
    """The replica for ``[replicas] kind = "azure"``: blob ``NAME.vhd`` in the configured container.
    ``router``: the project's network plane (``[network]``), which then routes every request."""
    if not _NAME.match(name):
        raise ReplicaError(f"replica name {name!r} is not valid",
                           hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
    settings = parse_options(options, "replicas", Path(root), allowed=REPLICA_KEYS,
                             default_concurrency=REPLICA_CONCURRENCY)
    settings = dataclasses.replace(settings, router=router)
    service = service_client(settings, "data", pool=settings.max_concurrency + 4)
    blob = service.get_blob_client(settings.container, f"{name}.vhd")
    return PageBlobReplica(blob, settings, service=service)
