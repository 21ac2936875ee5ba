"""Where block-hash files live in the appliance state, and which ones may go."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from godwit.errors import CorruptObjectError
from godwit.format import blockhashes


def path(hashes_dir: Path, disk_uid: str, cycle: int) -> Path:
    return hashes_dir / disk_uid / f"{cycle:010d}.bin"


def open_digests(hashes_dir: Path, disk_uid: str, cycle: int, algorithm: str, block_size: int
                 ) -> blockhashes.Reader | None:
    """The digests of a disk as of ``cycle``, verified and open for reading in windows, or None
    when they are missing or unusable (damaged, other settings)."""
    try:
        return blockhashes.open_reader(path(hashes_dir, disk_uid, cycle), algorithm, block_size)
    except (FileNotFoundError, CorruptObjectError):
        return None


def writer(hashes_dir: Path, disk_uid: str, cycle: int, algorithm: str, block_size: int, size: int
           ) -> blockhashes.Writer:
    """This cycle's file, written as ``<cycle>.tmp`` until the commit publishes it."""
    return blockhashes.Writer(path(hashes_dir, disk_uid, cycle), algorithm, block_size, size)


def _numbered(hashes_dir: Path, disk_uid: str) -> list[tuple[int, Path]]:
    d = hashes_dir / disk_uid
    if not d.is_dir():
        return []
    out = []
    for f in [*d.glob("*.bin"), *d.glob("*.tmp")]:  # an old .tmp is a write that died
        try:
            out.append((int(f.stem), f))
        except ValueError:
            continue
    return out


def prune(hashes_dir: Path, disk_uid: str, keep_from: int) -> None:
    """Delete the files of cycles before ``keep_from`` (the mover: below its oldest live point)."""
    for n, f in _numbered(hashes_dir, disk_uid):
        if n < keep_from:  # a live .tmp belongs to a cycle at or after keep_from: leave it
            f.unlink(missing_ok=True)


def retain(hashes_dir: Path, disk_uid: str, latest: int, keep: set[int]) -> None:
    """After cycle ``latest`` committed: keep its file and those of ``keep`` (the live recovery points
    and the cycles still to be applied, which verify and resync read); delete every other file
    of an earlier cycle (cycles a resync discarded, applied cycles whose point is released) and
    every ``.tmp`` (a write that died: ``latest``'s own is published by now).

    The caller holds the server's cycle lock, so no other write of this disk's files is under way.
    """
    for n, f in _numbered(hashes_dir, disk_uid):
        if f.suffix == ".tmp" or (n < latest and n not in keep):
            f.unlink(missing_ok=True)


def forced_path(hashes_dir: Path, disk_uid: str) -> Path:
    return hashes_dir / disk_uid / "resend.json"


def add_forced(hashes_dir: Path, disk_uid: str, ranges: list[tuple[int, int]] | None) -> None:
    """Make the next cycle resend these byte ranges (None: the whole disk), whatever the hashes say.

    ``resync`` uses it for the ranges of discarded cycles, which a replica may hold partly applied.
    """
    import json
    import os

    p = forced_path(hashes_dir, disk_uid)
    doc = load_forced(hashes_dir, disk_uid) or {"all": False, "ranges": []}
    if ranges is None:
        doc["all"] = True
    else:
        doc["ranges"] = [*doc["ranges"], *[list(r) for r in ranges]]
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".new")
    tmp.write_text(json.dumps(doc))
    os.replace(tmp, p)


def load_forced(hashes_dir: Path, disk_uid: str) -> dict[str, Any] | None:
    import json

    p = forced_path(hashes_dir, disk_uid)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"all": True, "ranges": []}  # damaged: the safe reading is "resend everything"
    return doc if isinstance(doc, dict) else {"all": True, "ranges": []}


def clear_forced(hashes_dir: Path, disk_uid: str) -> None:
    forced_path(hashes_dir, disk_uid).unlink(missing_ok=True)
