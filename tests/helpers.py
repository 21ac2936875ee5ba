"""Test helpers: disk images made with real qemu-img, and a test-only replayer of manifests."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from godwit.engine.reader import iter_writes, load_manifest
from godwit.format.manifest import Manifest
from godwit.project.project import Project


def make_raw(path: Path, size: int, *, seed: int = 0, writes: int = 20, max_len: int = 300_000) -> Path:
    """A sparse raw image with random data at random places."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for _ in range(writes):
            n = rng.randrange(1, max_len)
            off = rng.randrange(0, max(1, size - n))
            f.seek(off)
            f.write(rng.randbytes(n))
    return path


def scribble(path: Path, *, seed: int, writes: int = 10, max_len: int = 200_000, fmt: str = "raw") -> None:
    """Random writes into an existing image (through qemu-io for image formats)."""
    rng = random.Random(seed)
    size = virtual_size(path, fmt)
    for _ in range(writes):
        n = rng.randrange(1, max_len)
        off = rng.randrange(0, max(1, size - n))
        data = rng.randbytes(n) if rng.random() < 0.8 else bytes(n)
        write_at(path, off, data, fmt)


def write_at(path: Path, offset: int, data: bytes, fmt: str = "raw") -> None:
    if fmt == "raw":
        with open(path, "r+b") as f:
            f.seek(offset)
            f.write(data)
        return
    tmp = path.with_name(path.name + ".chunk")
    tmp.write_bytes(data)
    try:
        # qemu-io writes in place through the image format, as a running VM would.
        subprocess.run(["qemu-io", "-f", fmt, "-c", f"write -q -s {tmp} {offset} {len(data)}", str(path)],
                       check=True, capture_output=True)
    finally:
        tmp.unlink()


def virtual_size(path: Path, fmt: str = "raw") -> int:
    if fmt == "raw":
        return path.stat().st_size
    out = subprocess.run(["qemu-img", "info", "-f", fmt, "--output=json", str(path)], check=True,
                         capture_output=True, text=True).stdout
    import json

    return int(json.loads(out)["virtual-size"])


def convert(src: Path, dst: Path, fmt: str, *opts: str) -> Path:
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, *opts, str(src), str(dst)], check=True)
    return dst


def read_view(path: Path, fmt: str = "raw") -> bytes:
    if fmt == "raw":
        return path.read_bytes()
    raw = path.with_name(path.name + ".view")
    subprocess.run(["qemu-img", "convert", "-f", fmt, "-O", "raw", str(path), str(raw)], check=True)
    try:
        return raw.read_bytes()
    finally:
        raw.unlink()


class Replayer:
    """Test-only reconstruction of each disk from the committed manifests, in order."""

    def __init__(self, project: Project, server: str) -> None:
        self.project = project
        self.server = project.db.server(server)
        self.disks: dict[int, bytearray] = {}
        self.applied = 0

    def apply(self, cycle: int) -> Manifest:
        m = load_manifest(self.project.store, self.server.uid, cycle)
        assert m.parent == (self.applied or None), f"cycle {cycle} has parent {m.parent}, applied {self.applied}"
        for d in m.disks:
            buf = self.disks.setdefault(d.index, bytearray())
            if len(buf) < d.size:
                buf.extend(bytes(d.size - len(buf)))
        for w in iter_writes(self.project.store, m):
            buf = self.disks[w.disk]
            buf[w.offset:w.offset + w.length] = w.data if w.data is not None else bytes(w.length)
        self.applied = cycle
        return m

    def catch_up(self) -> None:
        for c in self.project.db.cycles(self.server.id, ("committed", "applied")):
            if c.number > self.applied:
                self.apply(c.number)


def rand_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

