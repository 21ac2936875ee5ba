"""The fixed-VHD footer (format/vhd.py): fields by the spec, and qemu-img reading our images."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from godwit.errors import CorruptObjectError
from godwit.format import vhd

MIB = 1 << 20


def qemu_img() -> str:
    path = shutil.which("qemu-img")
    if not path:
        pytest.fail("qemu-img is missing: apt-get install qemu-utils", pytrace=False)
    return path




# -- the footer ------------------------------------------------------------------------------------------

def test_footer_fields() -> None:
    uuid = bytes(range(16))
    ts = 1_800_000_000
    raw = vhd.footer(3 * MIB, uuid=uuid, timestamp=ts)
    assert len(raw) == 512
    assert raw[:8] == b"conectix"
    assert raw[28:32] == b"qem2" and raw[36:40] == b"Wi2k"
    assert struct.unpack(">Q", raw[16:24])[0] == 0xFFFFFFFFFFFFFFFF
    assert raw[85:] == bytes(427)
    f = vhd.parse_footer(raw)
    assert f["features"] == 2 and f["version"] == 0x00010000 and f["disk_type"] == 2
    assert f["original_size"] == f["current_size"] == 3 * MIB
    assert f["timestamp"] == ts and f["uuid"] == uuid and f["saved_state"] == 0
    assert (f["cylinders"], f["heads"], f["sectors_per_track"]) == vhd.chs(3 * MIB)
    # The checksum is the ones' complement of the byte sum of the rest.
    assert f["checksum"] == (~(sum(raw) - sum(raw[64:68])) & 0xFFFFFFFF)
    assert vhd.footer(3 * MIB, uuid=uuid, timestamp=ts) == raw  # deterministic given uuid and time


@pytest.mark.parametrize(("size", "geometry"), [
    (1 * MIB, (30, 4, 17)),  # small disks: 17 sectors per track, at least 4 heads
    (127 * MIB, (1019, 15, 17)),
    (1 << 30, (2080, 16, 63)),
    (200 << 30, (65535, 16, 255)),  # beyond CHS: clamped to the maximum
])
def test_chs_by_the_spec(size: int, geometry: tuple[int, int, int]) -> None:
    assert vhd.chs(size) == geometry


def test_rounded_size() -> None:
    assert [vhd.rounded_size(n) for n in (0, 1, MIB - 1, MIB, MIB + 1)] == [0, MIB, MIB, MIB, 2 * MIB]
    with pytest.raises(ValueError):
        vhd.rounded_size(-1)


def test_footer_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        vhd.footer(1000)
    with pytest.raises(ValueError):
        vhd.footer(MIB, uuid=b"short")
    good = vhd.footer(MIB)
    with pytest.raises(CorruptObjectError, match="cookie"):
        vhd.parse_footer(b"x" * 8 + good[8:])
    flipped = bytearray(good)
    flipped[50] ^= 1
    with pytest.raises(CorruptObjectError, match="checksum"):
        vhd.parse_footer(bytes(flipped))
    with pytest.raises(CorruptObjectError, match="512 bytes"):
        vhd.parse_footer(good[:100])
    assert vhd.parse_footer(b"data" * 100 + good)["current_size"] == MIB  # the end of a file works


@pytest.mark.parametrize("size", [3 * MIB, 127 * MIB + 4096])
def test_qemu_reads_our_vhd(size: int, tmp_path: Path) -> None:
    """qemu-img takes the size from our footer (creator "qem2"), not from the CHS geometry."""
    qemu = qemu_img()
    raw = tmp_path / "disk.raw"
    image = tmp_path / "disk.vhd"
    rounded = vhd.rounded_size(size)
    data = bytearray(rounded)
    data[:1 * MIB] = os.urandom(MIB)
    data[size - 4096:size] = os.urandom(4096)
    raw.write_bytes(bytes(data))
    image.write_bytes(bytes(data) + vhd.footer(rounded))
    info = subprocess.run([qemu, "info", "-f", "vpc", "--output=json", str(image)], check=True,
                          capture_output=True, text=True).stdout
    assert json.loads(info)["virtual-size"] == rounded
    cmp = subprocess.run([qemu, "compare", "-F", "vpc", "-f", "raw", str(raw), str(image)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
