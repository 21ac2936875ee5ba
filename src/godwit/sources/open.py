"""Opening a disk for a cycle: the reader for its recorded format."""

from __future__ import annotations

from pathlib import Path

from godwit.errors import SourceError
from godwit.sources.base import DiskSource
from godwit.sources.file import FileSource
from godwit.sources.probe import FORMATS, NBD_FORMATS, probe_format, record_format

__all__ = ["FORMATS", "NBD_FORMATS", "open_source", "probe_format", "record_format"]


def open_source(path: Path, fmt: str, *, snapshot_dir: Path | None = None,
                temp_tag: str | None = None) -> DiskSource:
    """Open a disk, in the format recorded when it was added (never probed here).

    ``snapshot_dir`` enables a point-in-time view where possible; ``temp_tag`` names every
    temporary the open makes (the engine passes ``<server uid>-d<disk>-c<cycle>``).
    """
    if fmt == "qemu-live":  # a running QEMU's disk, read from a fleecing export (sources.live)
        from godwit.sources.live import open_live

        return open_live(str(path), temp_tag=temp_tag, snapshot_dir=snapshot_dir)
    if fmt in ("raw", "block"):
        return FileSource(path, snapshot_dir=snapshot_dir, temp_tag=temp_tag)
    if fmt in NBD_FORMATS:
        from godwit.sources.nbd import NbdSource

        return NbdSource.for_image(path, fmt, snapshot=snapshot_dir is not None, temp_tag=temp_tag)
    raise SourceError(f"disk {path}: unknown format {fmt!r}")
