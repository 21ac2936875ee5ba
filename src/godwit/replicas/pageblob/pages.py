"""Byte ranges as page-blob requests: aligned Put Page of at most 4 MiB, Clear Page for long
zero runs, and read-modify-write of a 512-byte edge page that a write only partly covers."""

from __future__ import annotations

from typing import Any

from godwit.replicas.pageblob.queue import Job

PAGE = 512
MAX_PUT = 4 << 20  # Put Page's limit per request
ZERO_GRAIN = 64 << 10  # zero runs are found at this granularity
MIN_CLEAR = 256 << 10  # shorter zero runs go out as data: a request costs more than the bytes
ZEROS = bytes(MAX_PUT)


class Pages:
    """Requests (as queue jobs) on one page blob client."""

    def __init__(self, blob: Any, validate: str | None) -> None:
        self._blob = blob
        self._validate = validate

    def put(self, offset: int, data: bytes | memoryview) -> Job:
        def run() -> None:
            body = data if isinstance(data, bytes) else data.tobytes()
            self._blob.upload_page(body, offset=offset, length=len(body), validate_content=self._validate)
        return Job(offset, offset + len(data), len(data), run)

    def clear(self, offset: int, length: int) -> Job:
        return Job(offset, offset + length, 0, lambda: self._blob.clear_page(offset=offset, length=length))

    def put_or_clear(self, offset: int, data: bytes) -> Job:
        return self.clear(offset, len(data)) if data == ZEROS[:len(data)] else self.put(offset, data)

    def patch(self, page: int, at: int, data: bytes | memoryview) -> Job:
        """Read-modify-write of one 512-byte page with ``data`` placed ``at`` bytes in. Queued work
        on the page finishes first (the queue orders overlaps), so the read sees every earlier write."""
        def run() -> None:
            old = self._blob.download_blob(offset=page, length=PAGE).readall()
            buf = bytearray(old.ljust(PAGE, b"\0"))
            buf[at:at + len(data)] = data
            if buf == ZEROS[:PAGE]:
                self._blob.clear_page(offset=page, length=PAGE)
            else:
                self._blob.upload_page(bytes(buf), offset=page, length=PAGE, validate_content=self._validate)
        return Job(page, page + PAGE, PAGE, run)

    def edges(self, offset: int, length: int, data: memoryview | None) -> tuple[int, int, list[Job]]:
        """Jobs for partial head/tail pages, and the aligned middle [start, end) left to do.
        ``data`` None means zeros."""
        end = offset + length
        jobs: list[Job] = []

        def piece(lo: int, hi: int) -> bytes | memoryview:
            return data[lo - offset:hi - offset] if data is not None else ZEROS[:hi - lo]

        start = offset
        if start % PAGE:
            page = start - start % PAGE
            stop = min(page + PAGE, end)
            jobs.append(self.patch(page, start - page, piece(start, stop)))
            start = stop
        stop = end
        if end % PAGE and end > start:
            page = end - end % PAGE
            jobs.append(self.patch(page, 0, piece(page, end)))
            stop = page
        return start, max(start, stop), jobs

    def aligned(self, offset: int, view: memoryview) -> list[Job]:
        """Put Page for data, Clear Page for long zero runs; pieces of at most 4 MiB."""
        runs: list[list[int]] = []  # [start, end, is_zero]
        for lo in range(0, len(view), ZERO_GRAIN):
            hi = min(lo + ZERO_GRAIN, len(view))
            zero = int(view[lo:hi] == ZEROS[:hi - lo])
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
        jobs: list[Job] = []
        for lo, hi, zero in merged:
            if zero:
                jobs.append(self.clear(offset + lo, hi - lo))
                continue
            for p in range(lo, hi, MAX_PUT):
                q = min(p + MAX_PUT, hi)
                jobs.append(self.put(offset + p, view[p:q]))
        return jobs
