"""NbdSource.read_many's reads in flight (aio_pread) against a real qemu-nbd: the bytes, the
process-wide buffers (libnbd 1.14 keeps a reference to every buffer it is given: they must be
made once and reused, never per request), and a helper that dies mid-read."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from godwit.errors import SourceError
from godwit.sources import nbd as nbd_mod
from godwit.sources.nbd import AIO_DEPTH, AIO_SIZE, NbdSource

MiB = 1 << 20
SIZE = 16 * MiB

pytestmark = pytest.mark.skipif(nbd_mod._import_nbd() is None, reason="libnbd binding missing")


@pytest.fixture
def image(tmp_path: Path) -> tuple[Path, bytes]:
    data = random.Random(3).randbytes(SIZE)
    raw = tmp_path / "disk.raw"
    raw.write_bytes(data)
    path = tmp_path / "disk.qcow2"
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)],
                   check=True, capture_output=True)
    return path, data


def _pieces(rng: random.Random, n: int) -> list[tuple[int, int]]:
    """Scattered (offset, length) pieces: single clusters, a few merged runs, some large ones."""
    out = []
    for _ in range(n):
        length = rng.choice([AIO_SIZE] * 8 + [2 * AIO_SIZE, 4 * AIO_SIZE, 5 * AIO_SIZE, 1 * MiB, 4096])
        out.append((rng.randrange(0, (SIZE - length) // 4096) * 4096, length))
    return out


def test_read_many_in_flight_equals_the_image(image: tuple[Path, bytes]) -> None:
    path, data = image
    rng = random.Random(5)
    with NbdSource.for_image(path, "qcow2", snapshot=False) as src:
        for _ in range(20):
            pieces = _pieces(rng, rng.randrange(1, 60))
            bufs = [bytearray(n) for _, n in pieces]
            src.read_many([(off, memoryview(b)) for (off, _), b in zip(pieces, bufs, strict=True)])
            for (off, n), b in zip(pieces, bufs, strict=True):
                assert bytes(b) == data[off:off + n], (off, n)


def test_aio_buffers_are_made_once_and_reused(image: tuple[Path, bytes]) -> None:
    """Many cycles' worth of reads, on new connections each time, make no new buffer once the
    first AIO_DEPTH exist (a new buffer per request leaks its whole size in libnbd 1.14), and
    the process does not grow."""
    path, _ = image
    rng = random.Random(9)
    offsets = [rng.randrange(0, SIZE // AIO_SIZE) * AIO_SIZE for _ in range(200)]

    def rss() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    bufs = [bytearray(AIO_SIZE) for _ in offsets]
    views = [(o, memoryview(b)) for o, b in zip(offsets, bufs, strict=True)]
    for _ in range(2):
        with NbdSource.for_image(path, "qcow2", snapshot=False) as src:
            src.read_many(views)
    made, before = nbd_mod._aio_buffers.made, rss()
    for _ in range(5):
        with NbdSource.for_image(path, "qcow2", snapshot=False) as src:  # a new connection, as each cycle
            for _ in range(20):
                src.read_many(views)
    assert nbd_mod._aio_buffers.made == made <= 2 * AIO_DEPTH
    # 20,000 reads: a leak of one 64 KiB buffer a read would be 1.3 GB, of a wrapper ~4 MB.
    assert rss() - before < 2 * MiB


def test_helper_killed_mid_read_is_a_source_error(image: tuple[Path, bytes]) -> None:
    path, _ = image
    src = NbdSource.for_image(path, "qcow2", snapshot=False)
    try:
        pid = src.server_pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        views = [(i * AIO_SIZE, memoryview(bytearray(AIO_SIZE))) for i in range(64)]
        with pytest.raises(SourceError):
            src.read_many(views)
    finally:
        src.close()
    # The buffers of a failed read are never handed out while libnbd may still own them.
    free = nbd_mod._aio_buffers.take(sys.modules["nbd"], 1)
    nbd_mod._aio_buffers.give(free)
