"""The benchmarks' shared test image and log line (bench/replicate.py, mover.py, azure.py).

A sparse raw image: 1 MiB slots, a fixed fraction of them (60%) holding data chosen by the seed,
the rest holes. The data is blake3 XOF output keyed by the seed and the slot number:
deterministic, incompressible, and fast to make (~3 s for 2 GiB).
"""

from __future__ import annotations

import os
import random
import sys
import time
from pathlib import Path

import blake3

MIB = 1 << 20
EXTENT = MIB  # data/hole granularity of the image


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def key(seed: int, purpose: str) -> bytes:
    return blake3.blake3(f"godwit-bench/{purpose}/{seed}".encode()).digest(32)


def make_image(path: Path, size: int, seed: int, data_fraction: float = 0.6) -> int:
    """Write the image; returns the number of data bytes. Deterministic for a seed."""
    nslots = size // EXTENT
    ndata = round(nslots * data_fraction)
    slots = sorted(random.Random(seed).sample(range(nslots), ndata))
    k = key(seed, "image")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, size)
        for s in slots:
            os.pwrite(fd, blake3.blake3(s.to_bytes(8, "little"), key=k).digest(length=EXTENT), s * EXTENT)
        os.fsync(fd)
    finally:
        os.close(fd)
    return ndata * EXTENT
