"""Disk sources: one interface (:class:`DiskSource`), readers for raw files and block devices
(read directly) and for image formats (through qemu over NBD)."""

from godwit.sources.base import DiskSource, Extent
from godwit.sources.open import open_source
from godwit.sources.probe import DECLARABLE, Recorded, probe_format, record_format

__all__ = ["DECLARABLE", "DiskSource", "Extent", "Recorded", "open_source", "probe_format", "record_format"]
