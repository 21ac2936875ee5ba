"""The fixed-VHD footer: what turns raw disk bytes into a disk Azure (and qemu) accept.

A fixed VHD is the raw disk followed by one 512-byte footer. Azure wants the virtual size to be a
whole number of MiB, so the raw part is padded with zeros up to :func:`rounded_size` first. Layout
and the CHS algorithm follow the "Virtual Hard Disk Image Format Specification" (Microsoft, 2006);
every field is big-endian.
"""

from __future__ import annotations

import os
import struct
import time
from typing import Any

from godwit.errors import CorruptObjectError

FOOTER_SIZE = 512
MIB = 1 << 20
COOKIE = b"conectix"
FEATURES_RESERVED = 0x00000002  # "always set" bit of the Features field
FILE_FORMAT_VERSION = 0x00010000
FIXED_DATA_OFFSET = 0xFFFFFFFFFFFFFFFF  # fixed disks have no dynamic header
DISK_TYPE_FIXED = 2
# qemu's vpc driver sizes a disk from CHS geometry for creators it believes are Virtual PC ("vpc ",
# "qemu") and from current_size for the others; CHS cannot express every size, so a "vpc "
# footer would make qemu see a slightly smaller disk. "qem2" is the creator qemu itself writes
# when it means "trust current_size", so qemu-img and Azure agree on the size.
CREATOR_APP = b"qem2"
CREATOR_VERSION = 0x00050003  # the value qemu writes with "qem2"
CREATOR_HOST_OS = b"Wi2k"
VHD_EPOCH = 946684800  # 2000-01-01T00:00:00Z in Unix seconds
MAX_CHS_SECTORS = 65535 * 16 * 255

# cookie, features, version, data offset, timestamp, creator app, creator version, host OS,
# original size, current size, cylinders, heads, sectors per track, disk type, checksum, uuid,
# saved state; then 427 reserved zero bytes.
_LAYOUT = struct.Struct(">8sIIQI4sI4sQQHBBII16sB427x")
assert _LAYOUT.size == FOOTER_SIZE
_CHECKSUM_AT = 64


def rounded_size(size: int) -> int:
    """``size`` rounded up to a whole MiB (Azure refuses VHDs whose virtual size is not)."""
    if size < 0:
        raise ValueError(f"disk size {size} is negative")
    return -(-size // MIB) * MIB


def chs(size: int) -> tuple[int, int, int]:
    """(cylinders, heads, sectors per track) for ``size`` bytes, by the spec's algorithm."""
    total = min(size // 512, MAX_CHS_SECTORS)
    if total >= 65535 * 16 * 63:
        spt, heads = 255, 16
        cth = total // spt
    else:
        spt = 17
        cth = total // spt
        heads = max((cth + 1023) // 1024, 4)
        if cth >= heads * 1024 or heads > 16:
            spt, heads = 31, 16
            cth = total // spt
        if cth >= heads * 1024:
            spt, heads = 63, 16
            cth = total // spt
    return cth // heads, heads, spt


def checksum(footer: bytes | bytearray) -> int:
    """Ones' complement of the byte sum, with the checksum field counted as zero."""
    total = sum(footer[:_CHECKSUM_AT]) + sum(footer[_CHECKSUM_AT + 4:])
    return ~total & 0xFFFFFFFF


def footer(size: int, *, uuid: bytes | None = None, timestamp: int | None = None) -> bytes:
    """The 512-byte footer of a fixed VHD whose virtual size is ``size`` bytes.

    ``size`` must be a multiple of 512 (use :func:`rounded_size` for Azure). ``timestamp`` is Unix
    seconds (default now); ``uuid`` 16 bytes (default random). Pass both to rebuild a footer
    byte-identically, for example after a resize.
    """
    if size <= 0 or size % 512:
        raise ValueError(f"VHD size {size} is not a positive multiple of 512")
    if uuid is None:
        uuid = os.urandom(16)
    if len(uuid) != 16:
        raise ValueError("a VHD UUID is 16 bytes")
    ts = int(time.time() if timestamp is None else timestamp) - VHD_EPOCH
    cylinders, heads, spt = chs(size)
    raw = bytearray(_LAYOUT.pack(COOKIE, FEATURES_RESERVED, FILE_FORMAT_VERSION, FIXED_DATA_OFFSET,
                                 ts & 0xFFFFFFFF, CREATOR_APP, CREATOR_VERSION, CREATOR_HOST_OS, size, size,
                                 cylinders, heads, spt, DISK_TYPE_FIXED, 0, uuid, 0))
    struct.pack_into(">I", raw, _CHECKSUM_AT, checksum(raw))
    return bytes(raw)


def parse_footer(b: bytes) -> dict[str, Any]:
    """Decode a footer (exactly 512 bytes, or any longer buffer ending with one).

    Raises :class:`~godwit.errors.CorruptObjectError` if the cookie or the checksum is wrong.
    """
    if len(b) < FOOTER_SIZE:
        raise CorruptObjectError(f"a VHD footer is {FOOTER_SIZE} bytes, got {len(b)}")
    raw = bytes(b[-FOOTER_SIZE:])
    (cookie, features, version, data_offset, ts, app, app_version, host_os, original, current,
     cylinders, heads, spt, disk_type, stored_sum, uuid, saved) = _LAYOUT.unpack(raw)
    if cookie != COOKIE:
        raise CorruptObjectError(f"not a VHD footer: cookie is {cookie!r}, expected {COOKIE!r}")
    if stored_sum != checksum(raw):
        raise CorruptObjectError(f"VHD footer checksum mismatch: stored {stored_sum:#010x}, "
                                 f"computed {checksum(raw):#010x}")
    return {
        "cookie": cookie.decode("ascii"),
        "features": features,
        "version": version,
        "data_offset": data_offset,
        "timestamp": ts + VHD_EPOCH,
        "creator_app": app.decode("latin-1"),
        "creator_version": app_version,
        "creator_host_os": host_os.decode("latin-1"),
        "original_size": original,
        "current_size": current,
        "cylinders": cylinders,
        "heads": heads,
        "sectors_per_track": spt,
        "disk_type": disk_type,
        "checksum": stored_sum,
        "uuid": uuid,
        "saved_state": saved,
    }
