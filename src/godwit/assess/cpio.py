"""The file names in an initramfs, read from a stream, with hard limits (the image is hostile).

An initramfs is one or more cpio "newc" archives one after the other, each possibly compressed:
Debian and Ubuntu put an uncompressed early-microcode archive first, then the main one in zstd,
gzip or xz. Only names are kept; file data is skipped as it streams past.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import zlib
from collections.abc import Iterable, Iterator

import zstandard

HEADER = 110
MAX_NAME = 4096
MAX_OUT = 4 << 30  # decompressed bytes: a bigger initramfs is a decompression bomb
MAX_NAMES = 200_000


class InitramfsError(ValueError):
    """The initramfs is not one godwit can read (unknown compression, damaged, too big)."""


class _Stream:
    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._it = iter(chunks)
        self._buf = b""
        self._pos = 0
        self.consumed = 0

    def _fill(self, n: int) -> bool:
        while len(self._buf) - self._pos < n:
            try:
                chunk = next(self._it)
            except StopIteration:
                return False
            self._buf = self._buf[self._pos:] + chunk
            self._pos = 0
        return True

    def peek(self, n: int) -> bytes:
        self._fill(n)
        return self._buf[self._pos:self._pos + n]

    def read(self, n: int) -> bytes:
        if not self._fill(n):
            raise InitramfsError("the initramfs ends in the middle of an archive")
        out = self._buf[self._pos:self._pos + n]
        self._pos += n
        self.consumed += n
        return out

    def skip(self, n: int) -> None:
        while n > 0:
            k = min(n, 1 << 20)
            self.read(k)
            n -= k

    def rest(self) -> Iterator[bytes]:
        if self._pos < len(self._buf):
            yield self._buf[self._pos:]
        self._buf, self._pos = b"", 0
        yield from self._it


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


def _archive(s: _Stream, names: list[str]) -> None:
    """Read one newc archive up to its trailer."""
    while True:
        head = s.read(HEADER)
        if head[:6] not in (b"070701", b"070702"):
            raise InitramfsError("damaged cpio header in the initramfs")
        try:
            filesize = int(head[54:62], 16)
            namesize = int(head[94:102], 16)
        except ValueError:
            raise InitramfsError("damaged cpio header in the initramfs") from None
        if not 0 < namesize <= MAX_NAME:
            raise InitramfsError("a cpio name in the initramfs is longer than any real one")
        name = s.read(namesize)[:-1].decode("utf-8", "replace")
        s.skip(_pad4(HEADER + namesize))
        if name == "TRAILER!!!":
            return
        names.append(name)
        if len(names) > MAX_NAMES:
            raise InitramfsError(f"the initramfs lists more than {MAX_NAMES} files")
        s.skip(filesize + _pad4(filesize))


def _decompressor(magic: bytes) -> object | None:
    if magic.startswith(b"\x1f\x8b"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if magic.startswith(b"\x28\xb5\x2f\xfd"):
        return zstandard.ZstdDecompressor().decompressobj()
    if magic.startswith(b"\xfd7zXZ") or magic.startswith(b"\x5d\x00\x00"):
        return lzma.LZMADecompressor()
    if magic.startswith(b"BZh"):
        return bz2.BZ2Decompressor()
    return None


def _inflate(chunks: Iterator[bytes], magic: bytes) -> Iterator[bytes]:
    d = _decompressor(magic)
    if d is None:
        raise InitramfsError(f"the initramfs is compressed in a way godwit does not read (magic {magic.hex()})")
    total = 0
    for chunk in chunks:
        try:
            out = d.decompress(chunk)  # type: ignore[attr-defined]
        except (zlib.error, lzma.LZMAError, OSError, EOFError, zstandard.ZstdError) as exc:
            raise InitramfsError(f"the initramfs does not decompress: {exc}") from None
        total += len(out)
        if total > MAX_OUT:
            raise InitramfsError(f"the initramfs decompresses to more than {MAX_OUT >> 30} GiB")
        if out:
            yield out
        if getattr(d, "eof", False):
            return


def names(chunks: Iterable[bytes]) -> list[str]:
    """Every file name in the initramfs whose bytes ``chunks`` yields, in order."""
    s = _Stream(chunks)
    found: list[str] = []
    while True:
        while s.peek(4) == b"\0\0\0\0":  # padding between archives
            s.read(4)
        magic = s.peek(6)
        if not magic:
            return found
        if magic in (b"070701", b"070702"):
            _archive(s, found)
            continue
        # A compressed archive runs to the end (the kernel allows more after it; nobody does that).
        inner = _Stream(_inflate(s.rest(), magic))
        while inner.peek(6) in (b"070701", b"070702"):
            _archive(inner, found)
            while inner.peek(4) == b"\0\0\0\0":
                inner.read(4)
        return found


def gzip_archive(files: dict[str, bytes]) -> bytes:
    """A gzip'ed newc archive of ``files`` (for tests and for building a guest's initramfs)."""
    out = bytearray()
    for i, (name, data) in enumerate([*files.items(), ("TRAILER!!!", b"")]):
        raw = name.encode() + b"\0"
        mode = 0o100644 if name != "TRAILER!!!" else 0
        head = "070701" + "".join(f"{v:08x}" for v in (i + 1, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0))
        out += head.encode() + raw + bytes(_pad4(HEADER + len(raw))) + data + bytes(_pad4(len(data)))
    return gzip.compress(bytes(out))
