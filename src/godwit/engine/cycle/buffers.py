"""Page-aligned buffers kept from one cycle to the next.

A fresh anonymous mapping costs a page fault (and the kernel zeroing a page) on every 4 KiB first
touched: for a bitmap cycle's 20 MiB of change that was ~15 ms of a ~170 ms cycle, spent again
every cycle. Buffers given back are kept (a few per size) for the next cycle; MADV_FREE lets the
kernel take their pages back under memory pressure, so an idle process holds nothing it cannot
lose (where the kernel refuses MADV_FREE, as here, the touched pages of the kept buffers stay:
at most KEEP read buffers of 4 MiB and KEEP pack buffers of ~37 MiB). Their content is never
relied on: every user writes before it reads.
"""

from __future__ import annotations

import contextlib
import mmap
import threading
from collections.abc import Iterable

KEEP = 8  # buffers of one size kept between cycles

_lock = threading.Lock()
_spare: dict[int, list[mmap.mmap]] = {}


def take(size: int, n: int) -> list[mmap.mmap]:
    """``n`` buffers of ``size`` bytes: kept ones first, then new ones."""
    with _lock:
        have = _spare.get(size, [])
        out = [have.pop() for _ in range(min(n, len(have)))]
    out += [mmap.mmap(-1, size) for _ in range(n - len(out))]
    return out


def give(bufs: Iterable[mmap.mmap]) -> None:
    """Keep buffers that nothing refers to any more for the next cycle (the rest are closed)."""
    for buf in bufs:
        if hasattr(mmap, "MADV_FREE"):
            with contextlib.suppress(OSError):  # some kernels (gVisor) refuse it: the pages stay
                buf.madvise(mmap.MADV_FREE)
        with _lock:
            keep = _spare.setdefault(len(buf), [])
            if len(keep) < KEEP:
                keep.append(buf)
                continue
        with contextlib.suppress(BufferError):  # still viewed somewhere: the collector closes it
            buf.close()
