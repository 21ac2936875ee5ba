"""A replica disk in an Azure page blob: a fixed VHD that Azure can turn into a managed disk.

Layout: the disk, zero-padded up to a whole MiB, then the 512-byte VHD footer (``godwit.format.vhd``);
the blob is ``rounded_size + 512`` bytes. Writes go out as aligned Put Page calls of at most
4 MiB, several at once; runs of zeros become Clear Page calls (the blob stays sparse). A write
that does not start or end on a 512-byte page reads the edge page, patches it and writes it back.

Writes are write-behind: ``write`` and ``zero`` queue their requests on a small thread pool and
return, so a delta of scattered extents costs one round trip per ``max_concurrency`` requests
rather than one each. A request waits for any queued request on the same pages (later data wins),
the bytes in flight are bounded, and the first failure is raised by the next call; ``seal``,
``begin`` and ``abort`` wait for everything queued (``seal`` is where the contract needs it).

Recovery points are blob snapshots. ``seal(n)`` snapshots the blob with ``godwit_point = n`` in the
snapshot's own metadata, which the service stores atomically with the snapshot: a new process
lists snapshots to find the points, and a crash leaves no half-recorded point. Snapshots cost no
undo data: ``begin`` resizes and records the cycle's ranges in a small JSON blob beside the disk
(``NAME.vhd.cycle-N.json``, deleted by ``seal``) so that ``abort``, even in another process,
copies exactly those pages back from the last snapshot. (Azure restores a whole snapshot by
copying it over its base blob, but Azurite then shares pages between the two, so the next write
changes the snapshot too; and Azurite ignores page-range diffs. Per-range restore works on both.)

The same Put Page API writes a managed disk opened for direct upload: :meth:`PageBlobReplica.from_sas_url`
takes that disk's SAS URL. Such a blob has a fixed size and no snapshots: ``seal`` only flushes and
``points()`` is empty.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from godwit.azure.credentials import CredentialRef, build_credential, register_secret, sas_expiry
from godwit.errors import CorruptObjectError, GodwitError, NotFoundError, ReplicaError
from godwit.format import vhd
from godwit.replicas.base import PointReader, ReplicaDisk
from godwit.stores.azure import (
    CONNECTION_KEYS,
    AzureSettings,
    client_kwargs,
    error_code,
    map_error,
    parse_options,
    service_client,
)

PAGE = 512
MAX_PUT = 4 << 20  # Put Page's limit per request
ZERO_GRAIN = 64 << 10  # zero runs are found at this granularity
MIN_CLEAR = 256 << 10  # shorter zero runs go out as data: a request costs more than the bytes
MAX_PENDING_BYTES = 64 << 20  # write-behind: payload bytes queued at most
_ZEROS = bytes(MAX_PUT)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")

META_SIZE = "godwit_size"
META_UUID = "godwit_uuid"
META_CREATED = "godwit_created"
META_POINT = "godwit_point"

REPLICA_KEYS = CONNECTION_KEYS | {"max_concurrency", "validate_content"}
REPLICA_CONCURRENCY = 4  # Put Page requests in flight (FIELD-NOTES: 4 threads beat more on Azurite)


@dataclass(frozen=True)
class _Job:
    """One request: its byte range on the blob, the payload bytes it holds, and the call."""

    lo: int
    hi: int
    nbytes: int
    run: Callable[[], None]


@dataclass(frozen=True)
class _Pending:
    lo: int
    hi: int
    nbytes: int
    future: Future[None]
    what: str


def _fail(exc: Exception, settings: AzureSettings, what: str) -> GodwitError:
    return map_error(exc, settings, what, base=ReplicaError)


class _SnapshotReader(PointReader):
    def __init__(self, blob: Any, size: int, settings: AzureSettings, number: int) -> None:
        self._blob = blob
        self.size = size
        self._settings = settings
        self._number = number

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if offset + length > self.size:
            raise ReplicaError(f"read past the end of recovery point {self._number} ({offset + length} > {self.size})")
        if length == 0:
            return b""
        try:
            data: bytes = self._blob.download_blob(offset=offset, length=length,
                                                   max_concurrency=self._settings.max_concurrency).readall()
            return data
        except Exception as exc:
            raise _fail(exc, self._settings, f"reading recovery point {self._number}") from None

    def vhd_footer(self) -> bytes | None:
        """The point's own footer, so a VHD exported from it equals the blob byte for byte."""
        at = vhd.rounded_size(self.size)
        try:
            data: bytes = self._blob.download_blob(offset=at, length=vhd.FOOTER_SIZE).readall()
        except Exception as exc:
            raise _fail(exc, self._settings, f"reading the footer of recovery point {self._number}") from None
        return data if len(data) == vhd.FOOTER_SIZE else None

    def allocated(self) -> list[tuple[int, int]] | None:
        try:
            ranges = [(r.start, r.end + 1) for r in self._blob.list_page_ranges() if not r.cleared]
        except Exception as exc:
            raise _fail(exc, self._settings, f"listing pages of recovery point {self._number}") from None
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


class PageBlobReplica(ReplicaDisk):
    """One replica disk in one page blob; see the module docstring. One writer thread at a time."""

    def __init__(self, blob: Any, settings: AzureSettings, *, service: Any = None, snapshots: bool = True,
                 description: str | None = None) -> None:
        self._blob = blob
        self._service = service
        self.settings = settings
        self.snapshots = snapshots
        self.description = description or f"azure page blob {settings.account}/{settings.container}/{blob.blob_name}"
        self._validate = settings.validate_content if settings.validate_content != "none" else None
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._pending: deque[_Pending] = deque()
        self._pending_bytes = 0
        self._failed: GodwitError | None = None
        self._size: int | None = None
        self._uuid = os.urandom(16)
        self._created = int(time.time())

    # -- construction -----------------------------------------------------------------------------

    @classmethod
    def from_sas_url(cls, url: str, *, ca_file: Path | None = None, retries: int = 5,
                     retry_backoff_seconds: float = 1.0, max_concurrency: int = 4,
                     connect_timeout_seconds: float = 20.0, read_timeout_seconds: float = 120.0,
                     validate_content: str = "md5", extra: dict[str, Any] | None = None) -> PageBlobReplica:
        """Write into an existing page blob given by a full blob SAS URL, such as the direct-upload
        URL of a managed disk (``az disk grant-access --access-level Write``).

        The blob's size is fixed by whoever created it; no snapshots, so no recovery points.
        """
        from azure.storage.blob import BlobClient

        parts = urlsplit(url)
        if parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost"):
            raise ReplicaError("a SAS URL must use https", hint="use the URL Azure gave, unchanged")
        if "sig=" not in parts.query:
            raise ReplicaError("the blob URL carries no SAS (no sig= in its query)",
                               hint="pass the full SAS URL, including the part after '?'")
        register_secret(parts.query)
        expiry = sas_expiry(parts.query)
        if expiry is not None and expiry <= datetime.now(UTC):
            raise ReplicaError(f"the SAS URL expired at {expiry:%Y-%m-%dT%H:%M:%SZ}",
                               hint="grant access again (az disk grant-access) and pass the new URL")
        path = [p for p in parts.path.split("/") if p]
        host = parts.hostname or ""
        if host in ("127.0.0.1", "localhost") and path:
            account, path = path[0], path[1:]
        else:
            account = host.split(".", 1)[0]
        if len(path) < 2:
            raise ReplicaError("the SAS URL does not name a container and a blob")
        settings = AzureSettings(f"{parts.scheme}://{parts.netloc}", account, path[0],
                                 CredentialRef("sas"), ca_file, retries=retries,
                                 retry_backoff_seconds=retry_backoff_seconds,
                                 connect_timeout_seconds=connect_timeout_seconds,
                                 read_timeout_seconds=read_timeout_seconds, max_concurrency=max_concurrency,
                                 validate_content=validate_content, extra=extra or {})
        blob = BlobClient.from_blob_url(url, **client_kwargs(settings, pool=max_concurrency + 4))
        where = f"{parts.scheme}://{parts.netloc}{parts.path}"  # never the query: it is the secret
        return cls(blob, settings, snapshots=False, description=f"azure page blob {where} (SAS)")

    # -- helpers ------------------------------------------------------------------------------------

    def _executor(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.settings.max_concurrency,
                                                thread_name_prefix="godwit-pageblob")
            return self._pool

    def _fail(self, exc: Exception, what: str) -> GodwitError:
        return _fail(exc, self.settings, what)

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
                if not self.snapshots:
                    raise ReplicaError(f"{self.description} does not exist",
                                       hint="create the managed disk for upload first")
                self._size = 0
            elif self.snapshots and META_SIZE in (props.metadata or {}):
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

    # -- the write-behind queue -------------------------------------------------------------------

    def _submit(self, jobs: list[_Job], what: str) -> None:
        """Queue ``jobs`` (one operation's requests, on disjoint pages) behind earlier work."""
        self._raise_failed()
        for job in jobs:
            overlapping = [p.future for p in self._pending if p.lo < job.hi and job.lo < p.hi]
            if overlapping:
                wait(overlapping)
                self._reap()
            future = self._executor().submit(job.run)
            self._pending.append(_Pending(job.lo, job.hi, job.nbytes, future, what))
            self._pending_bytes += job.nbytes
            while self._pending and (self._pending_bytes > MAX_PENDING_BYTES
                                     or len(self._pending) > 4 * self.settings.max_concurrency):
                wait([self._pending[0].future])
                self._reap()
        self._reap()
        self._raise_failed()

    def _reap(self) -> None:
        """Forget finished requests; remember the first failure."""
        kept: deque[_Pending] = deque()
        for p in self._pending:
            if not p.future.done():
                kept.append(p)
                continue
            self._pending_bytes -= p.nbytes
            error = p.future.exception()
            if error is not None and self._failed is None:
                self._failed = self._fail(error if isinstance(error, Exception) else RuntimeError(error), p.what)
        self._pending = kept

    def _raise_failed(self) -> None:
        if self._failed is not None:
            raise self._failed

    def flush(self) -> None:
        """Wait for every queued write; raise the first that failed."""
        wait([p.future for p in self._pending])
        self._reap()
        self._raise_failed()

    def _drain(self) -> None:
        """Wait for every queued write and forget failures (before a rollback or removal)."""
        wait([p.future for p in self._pending])
        self._reap()
        self._failed = None

    def _put(self, offset: int, data: bytes | memoryview) -> _Job:
        def run() -> None:
            body = data if isinstance(data, bytes) else data.tobytes()
            self._blob.upload_page(body, offset=offset, length=len(body), validate_content=self._validate)
        return _Job(offset, offset + len(data), len(data), run)

    def _clear(self, offset: int, length: int) -> _Job:
        return _Job(offset, offset + length, 0, lambda: self._blob.clear_page(offset=offset, length=length))

    def _patch(self, page: int, at: int, data: bytes | memoryview) -> _Job:
        """Read-modify-write of one 512-byte page with ``data`` placed ``at`` bytes in. Queued work
        on the page finishes first (_submit), so the read sees every earlier write."""
        def run() -> None:
            old = self._blob.download_blob(offset=page, length=PAGE).readall()
            buf = bytearray(old.ljust(PAGE, b"\0"))
            buf[at:at + len(data)] = data
            if buf == _ZEROS[:PAGE]:
                self._blob.clear_page(offset=page, length=PAGE)
            else:
                self._blob.upload_page(bytes(buf), offset=page, length=PAGE, validate_content=self._validate)
        return _Job(page, page + PAGE, PAGE, run)

    def _edges(self, offset: int, length: int, data: memoryview | None) -> tuple[int, int, list[_Job]]:
        """Jobs for partial head/tail pages, and the aligned middle [start, end) left to do."""
        end = offset + length
        jobs: list[_Job] = []

        def piece(lo: int, hi: int) -> bytes | memoryview:
            return data[lo - offset:hi - offset] if data is not None else _ZEROS[:hi - lo]

        start = offset
        if start % PAGE:
            page = start - start % PAGE
            stop = min(page + PAGE, end)
            jobs.append(self._patch(page, start - page, piece(start, stop)))
            start = stop
        stop = end
        if end % PAGE and end > start:
            page = end - end % PAGE
            jobs.append(self._patch(page, 0, piece(page, end)))
            stop = page
        return start, max(start, stop), jobs

    # -- the ReplicaDisk interface ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._load()

    def begin(self, number: int, ranges: list[tuple[int, int]], size: int) -> None:
        if size <= 0:
            raise ReplicaError(f"cannot make {self.description} {size} bytes long")
        self.flush()
        if self.snapshots and number in self._snapshots():
            return  # already sealed: re-applying it is harmless and there is nothing to prepare
        old = self._load()
        length = vhd.rounded_size(size) + vhd.FOOTER_SIZE
        if not self.snapshots:
            props = self._properties()
            if int(props.size) != length:
                raise ReplicaError(f"{self.description} is {props.size} bytes; a {size}-byte disk needs {length}",
                                   hint=f"create the managed disk for upload with --upload-size-bytes {length}")
            self._submit([self._put(vhd.rounded_size(size), self._footer(size))], "writing the VHD footer")
            self.flush()
            self._size = size
            return
        if old and size < old:
            raise ReplicaError(f"cannot shrink {self.description} from {old} to {size} bytes",
                               hint="a source disk that shrank needs a new replica")
        props = self._properties()
        self._record(number, ranges, old)
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
        start, stop, jobs = self._edges(offset, len(view), view)
        jobs += self._aligned_jobs(start, view[start - offset:stop - offset])
        self._submit(jobs, f"writing {len(view)} bytes at {offset}")

    def _aligned_jobs(self, offset: int, view: memoryview) -> list[_Job]:
        """Put Page for data, Clear Page for long zero runs; pieces of at most 4 MiB."""
        runs: list[list[int]] = []  # [start, end, is_zero]
        for lo in range(0, len(view), ZERO_GRAIN):
            hi = min(lo + ZERO_GRAIN, len(view))
            zero = int(view[lo:hi] == _ZEROS[:hi - lo])
            if runs and runs[-1][2] == zero:
                runs[-1][1] = hi
            else:
                runs.append([lo, hi, zero])
        # Short zero runs travel as data: fewer, larger requests.
        merged: list[list[int]] = []
        for lo, hi, zero in runs:
            if zero and hi - lo < MIN_CLEAR:
                zero = 0
            if merged and merged[-1][2] == zero == 0:
                merged[-1][1] = hi
            else:
                merged.append([lo, hi, zero])
        jobs: list[_Job] = []
        for lo, hi, zero in merged:
            if zero:
                jobs.append(self._clear(offset + lo, hi - lo))
                continue
            for p in range(lo, hi, MAX_PUT):
                q = min(p + MAX_PUT, hi)
                jobs.append(self._put(offset + p, view[p:q]))
        return jobs

    def zero(self, offset: int, length: int) -> None:
        # Past the end reads as zeros already: clamp, as the local replica does.
        length = max(0, min(length, self._load() - offset))
        self._check_range(offset, length)
        start, stop, jobs = self._edges(offset, length, None)
        if stop > start:
            jobs.append(self._clear(start, stop - start))
        self._submit(jobs, f"zeroing {length} bytes at {offset}")

    def _snapshots(self) -> dict[int, list[Any]]:
        """Point number -> snapshot items (newest last), from the service's listing."""
        if not self.snapshots:
            return {}
        container = self._service.get_container_client(self.settings.container)
        name = self._blob.blob_name
        found: dict[int, list[Any]] = {}
        try:
            for item in container.list_blobs(name_starts_with=name, include=["snapshots", "metadata"]):
                point = (item.metadata or {}).get(META_POINT)
                if item.name == name and item.snapshot and point is not None and point.isdigit():
                    found.setdefault(int(point), []).append(item)
        except Exception as exc:
            raise self._fail(exc, "listing recovery points") from None
        for items in found.values():
            items.sort(key=lambda i: i.snapshot)
        return found

    def seal(self, number: int) -> None:
        self.flush()  # every queued write answered by the service: durable
        if not self.snapshots or number in self._snapshots():
            return
        size = self._load()
        try:
            self._blob.create_snapshot(metadata={**self._meta(size), META_POINT: str(number)})
        except Exception as exc:
            raise self._fail(exc, f"sealing recovery point {number}") from None
        self._drop_record(number)

    def _delete_snapshots(self, ids: list[str], number: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for sid in ids:
            try:
                self._service.get_blob_client(self.settings.container, self._blob.blob_name,
                                              snapshot=sid).delete_blob()
            except ResourceNotFoundError:
                continue
            except Exception as exc:
                raise self._fail(exc, f"releasing recovery point {number}") from None

    def release(self, number: int) -> None:
        found = self._snapshots()
        if number not in found:
            return
        if number == max(found):
            raise ReplicaError(f"recovery point {number} is the live disk of {self.description} and cannot be "
                               "released", hint="release it after a later cycle is sealed")
        self._delete_snapshots([i.snapshot for i in found[number]], number)

    def points(self) -> list[int]:
        return sorted(self._snapshots())

    def open_point(self, number: int) -> PointReader:
        found = self._snapshots()
        items = found.get(number)
        if not items:
            available = f" (available: {', '.join(map(str, sorted(found)))})" if found else ""
            raise NotFoundError(f"recovery point {number} does not exist on {self.description}{available}")
        item = items[-1]
        size = int((item.metadata or {}).get(META_SIZE, self._load()))
        snap = self._service.get_blob_client(self.settings.container, self._blob.blob_name, snapshot=item.snapshot)
        return _SnapshotReader(snap, size, self.settings, number)

    def abort(self, number: int) -> None:
        """Put the live blob back to the last sealed point, bit for bit: the pages of the ranges
        ``begin`` recorded are copied back from that point's snapshot, then size and metadata."""
        from azure.core.exceptions import ResourceNotFoundError

        self._drain()
        if not self.snapshots:
            raise ReplicaError(f"cannot roll back {self.description}: a direct upload keeps no recovery points",
                               hint="upload the disk again from its last good cycle")
        found = self._snapshots()
        if number in found:
            return
        record = self._read_record(number)
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
            self._drop_record(number)
            self._size = 0
            return
        item = found[max(found)][-1]
        meta = {k: v for k, v in (item.metadata or {}).items() if k != META_POINT}
        length = int(item.size)
        snap = self._service.get_blob_client(self.settings.container, self._blob.blob_name, snapshot=item.snapshot)
        try:
            for lo, hi in record:
                for p in range(lo, min(hi, length), MAX_PUT):
                    q = min(p + MAX_PUT, hi, length)
                    data = snap.download_blob(offset=p, length=q - p).readall()
                    job = self._clear(p, q - p) if data == _ZEROS[:q - p] else self._put(p, data)
                    self._submit([job], what)
            self.flush()
            if int(self._blob.get_blob_properties().size) != length:
                self._blob.resize_blob(length)
            self._blob.set_blob_metadata(meta)
        except GodwitError:
            raise
        except Exception as exc:
            raise self._fail(exc, what) from None
        self._drop_record(number)
        self._size = int(meta.get(META_SIZE, self._size or 0))

    # -- the cycle record: what abort() must restore ------------------------------------------------

    def _record_client(self, number: int) -> Any:
        return self._service.get_blob_client(self.settings.container,
                                             f"{self._blob.blob_name}.cycle-{number:010d}.json")

    def _record(self, number: int, ranges: list[tuple[int, int]], old_size: int) -> None:
        """Save cycle ``number``'s ranges (whole pages, plus the old footer's page) before any write.
        A record already there is kept: it was made before any of this cycle's writes."""
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
            self._record_client(number).upload_blob(doc, overwrite=False)
        except ResourceExistsError:
            pass
        except Exception as exc:
            raise self._fail(exc, f"recording cycle {number}") from None

    def _read_record(self, number: int) -> list[tuple[int, int]] | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            raw = self._record_client(number).download_blob().readall()
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, f"reading the record of cycle {number}") from None
            return None
        except Exception as exc:
            raise self._fail(exc, f"reading the record of cycle {number}") from None
        try:
            return [(int(lo), int(hi)) for lo, hi in json.loads(raw)["ranges"]]
        except (ValueError, KeyError, TypeError):
            raise CorruptObjectError(f"the record of cycle {number} beside {self.description} is damaged",
                                     hint="the cycle cannot be rolled back; resync the server") from None

    def _drop_record(self, number: int) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            self._record_client(number).delete_blob()
        except ResourceNotFoundError:
            pass
        except Exception as exc:
            raise self._fail(exc, f"deleting the record of cycle {number}") from None

    def remove(self) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        self._drain()
        if not self.snapshots:
            raise ReplicaError(f"{self.description} is a managed disk upload; it cannot be removed from here",
                               hint="revoke its access and delete the managed disk in Azure")
        container = self._service.get_container_client(self.settings.container)
        try:
            for name in list(container.list_blob_names(name_starts_with=f"{self._blob.blob_name}.cycle-")):
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
        self._drain()
        with self._pool_lock:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
                self._pool = None
        with contextlib.suppress(Exception):
            (self._service or self._blob).close()


def open_pageblob_replica(options: dict[str, Any], root: Path, name: str) -> PageBlobReplica:
    """The replica for ``[replicas] kind = "azure"``: blob ``NAME.vhd`` in the configured container."""
    if not _NAME.match(name):
        raise ReplicaError(f"replica name {name!r} is not valid",
                           hint="letters, digits, '.', '_' and '-', starting with a letter or digit")
    settings = parse_options(options, "replicas", Path(root), allowed=REPLICA_KEYS,
                             default_concurrency=REPLICA_CONCURRENCY)
    service = service_client(settings, pool=settings.max_concurrency + 4)
    blob = service.get_blob_client(settings.container, f"{name}.vhd")
    return PageBlobReplica(blob, settings, service=service)


def copy_point_to_blob(replica: PageBlobReplica, number: int, dest_container: str, dest_name: str, *,
                       timeout: float = 3600.0) -> str:
    """Copy recovery point ``number`` to a new page blob (same account); returns its URL.

    A server-side copy from the snapshot: no data passes through this machine. Where the service
    refuses to authorise the source (an Entra identity without copy rights on it), the allocated
    page ranges are copied through here instead.
    """
    from azure.core.exceptions import HttpResponseError

    if not replica.snapshots or replica._service is None:
        raise ReplicaError(f"{replica.description} has no recovery points to copy")
    reader = replica.open_point(number)
    assert isinstance(reader, _SnapshotReader)
    dest = replica._service.get_blob_client(dest_container, dest_name)
    what = f"copying recovery point {number} to {dest_container}/{dest_name}"
    try:
        try:
            dest.start_copy_from_url(_source_url(reader._blob.url, replica.settings))
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403) or error_code(exc) in ("ContainerNotFound",):
                raise
            _copy_ranges(reader, dest, replica)
            return _clean_url(str(dest.url))
        _wait_copy(dest, what, timeout)
        return _clean_url(str(dest.url))
    except GodwitError:
        raise
    except Exception as exc:
        raise _fail(exc, replica.settings, what) from None


def _source_url(url: str, settings: AzureSettings) -> str:
    """A snapshot URL the service may read as a copy source: a SAS authorises only the request
    it signs, so the source carries one of its own; a key or an identity covers its own account."""
    if "sig=" in urlsplit(url).query:
        return url  # the SDK already put the client's SAS on it
    if settings.credential.kind in ("sas", "connection_string"):
        token = build_credential(settings.credential, settings.account)
        if isinstance(token, str):
            return f"{url}&{token}"
    return url


def _clean_url(url: str) -> str:
    """A blob's address without its query: a SAS must never be printed or stored."""
    return urlsplit(url)._replace(query="").geturl()


def _wait_copy(dest: Any, what: str, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        copy = dest.get_blob_properties().copy
        if copy.status in (None, "success"):
            return
        if copy.status in ("failed", "aborted"):
            raise ReplicaError(f"{what} {copy.status}: {copy.status_description or 'no reason given'}")
        if time.monotonic() > deadline:
            raise ReplicaError(f"{what} did not finish within {timeout:.0f} s",
                               hint="it continues on the service; check the blob's copy status later")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def _copy_ranges(reader: _SnapshotReader, dest: Any, replica: PageBlobReplica) -> None:
    length = vhd.rounded_size(reader.size) + vhd.FOOTER_SIZE
    dest.create_page_blob(length)
    for offset, size in reader.allocated() or []:
        end = -(-(offset + size) // PAGE) * PAGE  # whole pages; past the disk's end they are padding
        for p in range(offset, end, MAX_PUT):
            n = min(MAX_PUT, end - p)
            data = reader.read(p, min(n, reader.size - p))  # read() refuses to go past the disk's end
            dest.upload_page(data.ljust(n, b"\0"), offset=p, length=n)
    footer = vhd.footer(vhd.rounded_size(reader.size), uuid=replica._uuid, timestamp=replica._created)
    dest.upload_page(footer, offset=length - vhd.FOOTER_SIZE, length=vhd.FOOTER_SIZE)


__all__ = ["PageBlobReplica", "copy_point_to_blob", "open_pageblob_replica"]
