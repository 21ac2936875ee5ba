"""Where block-hash files live in the appliance state, and which ones may go."""

from __future__ import annotations

from pathlib import Path

from godwit.errors import CorruptObjectError
from godwit.format import blockhashes


def path(hashes_dir: Path, disk_uid: str, cycle: int) -> Path:
    return hashes_dir / disk_uid / f"{cycle:010d}.bin"


def load(hashes_dir: Path, disk_uid: str, cycle: int, algorithm: str, block_size: int
         ) -> tuple[int, bytearray] | None:
    """The digests of a disk as of ``cycle``, or None when they are missing or unusable."""
    p = path(hashes_dir, disk_uid, cycle)
    if not p.exists():
        return None
    try:
        return blockhashes.read(p, algorithm, block_size)
    except CorruptObjectError:
        return None


def prune(hashes_dir: Path, disk_uid: str, keep_from: int) -> None:
    """Delete the files of cycles before ``keep_from``."""
    d = hashes_dir / disk_uid
    if not d.is_dir():
        return
    for f in [*d.glob("*.bin"), *d.glob("*.tmp")]:  # a .tmp is a write that died
        try:
            n = int(f.stem)
        except ValueError:
            continue
        if n < keep_from or f.suffix == ".tmp":
            f.unlink(missing_ok=True)
