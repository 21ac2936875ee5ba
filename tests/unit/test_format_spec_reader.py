"""docs/format.md is enough to read a cache store, and format version 1 stays readable.

``SpecReader`` below is written from docs/format.md alone: plain ``struct``, ``json``, ``zstandard``
and ``xxhash``, no ``godwit.format`` import. It reconstructs disks from a store that godwit wrote
and must get the source bytes back; it also checks every rule the spec promises about the bytes.

The golden fixture ``tests/fixtures/format-v1/`` is a store (and its block-hash files) written once
by godwit 0.1.0. The current decoder must keep reading it. Never regenerate it: add a new fixture
for a new format version instead (``python -m tests.unit.test_format_spec_reader DEST``).
``tests/fixtures/blockhashes-v2/`` holds the same block-hash files in version 2 (godwit 0.2), which
both readers must read to the same digests.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import xxhash
import zstandard

from godwit.errors import CorruptObjectError

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "format-v1"
FIXTURE_V2 = Path(__file__).resolve().parents[1] / "fixtures" / "blockhashes-v2"  # block-hash files only

# -- the independent reader: docs/format.md, and nothing else ---------------------------------

PACK_HEADER = b"GWPK\x01\x00\x00\x00"
PACK_ENTRY = struct.Struct("<HBBIQQQ16s")  # disk, codec, flags, stored, offset, length, pos, checksum
PACK_TRAILER = struct.Struct("<IQ4s")  # count, xxh3-64 of the index, "GWPX"
MANIFEST_HEADERS = {1: b"GWMF\x01\x00\x00\x00", 2: b"GWMF\x02\x00\x00\x00"}
CONSISTENCY = {1: ("crash", "none"), 2: ("crash", "none", "fs")}  # values by manifest version
BLOCKHASH_HEAD = struct.Struct("<4sBBxxIQ")  # "GWBH", version, algorithm, block size, disk size
BLOCKHASH_RUN = struct.Struct("<QI")  # version 2: first block, number of digests
ALGORITHMS = {1: "xxh3-128", 2: "blake3"}


class SpecError(Exception):
    """The store breaks a rule of docs/format.md."""


@dataclass(frozen=True)
class IndexEntry:
    disk: int
    codec: int
    flags: int
    stored: int
    offset: int
    length: int
    pos: int
    checksum: bytes


class SpecReader:
    """A read-only cache store in a local folder (object key = path under the folder)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dctx = zstandard.ZstdDecompressor()

    def get(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def keys(self, prefix: str) -> list[str]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".tmp-")]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                key = name if rel == "." else f"{rel}/{name}"
                if not name.startswith(".tmp-") and key.startswith(prefix):
                    out.append(key)
        return sorted(out)

    def store_config(self) -> dict[str, object]:
        doc = json.loads(self.get("godwit-store.json"))
        if doc["format"] != 1:
            raise SpecError(f"store format {doc['format']}")
        return dict(doc)

    def cycles(self, server_uid: str) -> list[int]:
        prefix = f"servers/{server_uid}/cycles/"
        names = [k[len(prefix):] for k in self.keys(prefix)]
        return [int(n[:10]) for n in names if len(n) == 19 and n.endswith(".manifest") and n[:10].isdigit()]

    def manifest(self, server_uid: str, cycle: int) -> dict[str, object]:
        data = self.get(f"servers/{server_uid}/cycles/{cycle:010d}.manifest")
        if len(data) < 24 or data[:4] != b"GWMF":
            raise SpecError("not a manifest")
        if data[:8] not in MANIFEST_HEADERS.values():
            raise SpecError(f"manifest version {data[4]} or reserved bytes not zero")
        if xxhash.xxh3_128_digest(data[:-16]) != data[-16:]:
            raise SpecError("manifest trailer mismatch")
        doc: dict[str, object] = json.loads(self.dctx.decompress(data[8:-16]))
        server = doc["server"]
        assert isinstance(server, dict)
        if doc["format"] != data[4] or server["uid"] != server_uid or doc["cycle"] != cycle:
            raise SpecError("manifest body does not match its key")
        if doc["consistency"] not in CONSISTENCY[data[4]]:
            raise SpecError(f"consistency {doc['consistency']!r} is not a value of manifest version {data[4]}")
        if not isinstance(doc.get("consistency_detail", ""), str):
            raise SpecError("consistency_detail is not a string")
        return doc

    def pack_index(self, data: bytes) -> list[IndexEntry]:
        if data[:8] != PACK_HEADER:
            raise SpecError("not a version 1 pack")
        count, digest, magic = PACK_TRAILER.unpack_from(data, len(data) - PACK_TRAILER.size)
        start = len(data) - PACK_TRAILER.size - count * PACK_ENTRY.size
        if magic != b"GWPX" or start < len(PACK_HEADER):
            raise SpecError("pack trailer damaged")
        index = data[start:len(data) - PACK_TRAILER.size]
        if xxhash.xxh3_64_intdigest(index) != digest:
            raise SpecError("pack index checksum mismatch")
        return [IndexEntry(*PACK_ENTRY.unpack_from(index, i * PACK_ENTRY.size)) for i in range(count)]

    def extent(self, pack: bytes, pos: int, stored: int, codec: int, length: int, checksum: bytes) -> bytes:
        blob = pack[pos:pos + stored]
        if len(blob) != stored:
            raise SpecError("pack truncated")
        if codec == 0:
            raw = blob
        elif codec == 1:
            try:
                raw = self.dctx.decompress(blob, max_output_size=length)
            except zstandard.ZstdError:
                raise SpecError("extent checksum mismatch (the zstd frame does not decode)") from None
        else:
            raise SpecError(f"unknown codec {codec}")
        if len(raw) != length or xxhash.xxh3_128_digest(raw) != checksum:
            raise SpecError("extent checksum mismatch")
        return raw

    def writes(self, server_uid: str, doc: dict[str, object]) -> Iterator[tuple[int, int, bytes | None, int]]:
        """(disk, offset, data or None for zeros, length) of one cycle, every extent verified first."""
        packs = doc["packs"]
        disks = doc["disks"]
        assert isinstance(packs, list) and isinstance(disks, list)
        loaded = {p: self.get(f"servers/{server_uid}/packs/{p}.pack") for p in packs}
        out: list[tuple[int, int, bytes | None, int]] = []
        for d in disks:
            for off, n in d["zeros"]:
                out.append((d["index"], off, None, n))
            for off, n, pidx, pos, stored, codec, csum in d["extents"]:
                raw = self.extent(loaded[packs[pidx]], pos, stored, codec, n, bytes.fromhex(csum))
                out.append((d["index"], off, raw, n))
        yield from out

    def reconstruct(self, server_uid: str, cycle: int) -> dict[int, bytes]:
        """Each disk as of ``cycle``: apply the parent chain from its root, oldest first."""
        chain = []
        n: int | None = cycle
        while n is not None:
            doc = self.manifest(server_uid, n)
            chain.append(doc)
            parent = doc["parent"]
            assert parent is None or (isinstance(parent, int) and parent < n)
            n = parent
        replica: dict[int, bytearray] = {}
        for doc in reversed(chain):
            disks = doc["disks"]
            assert isinstance(disks, list)
            for d in disks:
                buf = replica.setdefault(d["index"], bytearray())
                if len(buf) != d["previous_size"] or d["size"] < d["previous_size"]:
                    raise SpecError(f"disk {d['index']} is not at the parent's size")
                buf.extend(bytes(d["size"] - len(buf)))
            for disk, off, data, length in self.writes(server_uid, doc):
                replica[disk][off:off + length] = data if data is not None else bytes(length)
        return {k: bytes(v) for k, v in replica.items()}


def check_rules(reader: SpecReader, server_uid: str, cycle: int) -> None:
    """The promises of docs/format.md that a reader may rely on, checked on real bytes."""
    doc = reader.manifest(server_uid, cycle)
    bs = doc["block_size"]
    packs = doc["packs"]
    disks = doc["disks"]
    assert isinstance(bs, int) and isinstance(packs, list) and isinstance(disks, list)
    assert bs & (bs - 1) == 0 and 4096 <= bs <= 4 << 20
    assert doc["consistency"] in ("crash", "none", "fs") and doc["hash"] in ("xxh3-128", "blake3")
    assert len(set(packs)) == len(packs)
    assert [d["index"] for d in disks] == list(range(len(disks)))
    indexes = {p: reader.pack_index(reader.get(f"servers/{server_uid}/packs/{p}.pack")) for p in packs}
    used: set[tuple[str, int]] = set()
    for d in disks:
        size = d["size"]
        runs = [(off, n, True) for off, n, *_ in d["extents"]] + [(off, n, False) for off, n in d["zeros"]]
        runs.sort()
        for off, n, _ in runs:
            assert n > 0 and off % bs == 0 and off + n <= size
            assert n % bs == 0 or off + n == size, "only the last run of a disk may end off a block boundary"
        for (a, na, _), (b, _, _) in itertools.pairwise(runs):
            assert a + na <= b, "runs of one disk overlap"
        zeros = d["zeros"]
        assert zeros == sorted(zeros)
        for (a, na), (b, _) in itertools.pairwise(zeros):
            assert a + na < b, "adjacent zero runs are merged"
        assert d["extents"] == sorted(d["extents"])
        if doc["parent"] is None:
            assert d["previous_size"] == 0
            assert sum(n for _, n, _ in runs) == size, "a root cycle covers the whole disk"
        for off, n, pidx, pos, stored, codec, csum in d["extents"]:
            entry = next(e for e in indexes[packs[pidx]] if e.pos == pos)
            assert (entry.disk, entry.codec, entry.flags, entry.stored, entry.offset, entry.length) == (
                d["index"], codec, 0, stored, off, n)
            assert entry.checksum.hex() == csum
            assert codec == 1 or stored == n
            used.add((packs[pidx], pos))
    for p, entries in indexes.items():
        pos = len(PACK_HEADER)
        for e in entries:
            assert e.pos == pos, "blobs follow the header back to back, in index order"
            pos += e.stored
            assert (p, e.pos) in used, "every index entry of a committed pack is in the manifest"


def _zero_digest(algorithm: str, n: int) -> bytes:
    zeros = bytes(n)
    return xxhash.xxh3_128_digest(zeros) if algorithm == "xxh3-128" else blake3.blake3(zeros).digest(16)


def read_blockhashes(path: Path) -> tuple[str, int, int, list[bytes]]:
    """A block-hash file of version 1 (dense) or 2 (runs; blocks in no run are holes)."""
    data = path.read_bytes()
    if len(data) < BLOCKHASH_HEAD.size + 16:
        raise SpecError("block-hash file truncated")
    magic, version, code, bs, size = BLOCKHASH_HEAD.unpack_from(data)
    if magic != b"GWBH" or version not in (1, 2) or data[6:8] != b"\x00\x00":
        raise SpecError("not a block-hash file of version 1 or 2")
    if xxhash.xxh3_128_digest(data[:-16]) != data[-16:]:
        raise SpecError("block-hash trailer mismatch")
    algorithm = ALGORITHMS[code]
    count = -(-size // bs)
    body = data[BLOCKHASH_HEAD.size:-16]
    if version == 1:
        if len(body) != count * 16:
            raise SpecError("block-hash file has the wrong number of digests")
        return algorithm, bs, size, [body[i:i + 16] for i in range(0, len(body), 16)]
    digests: list[bytes | None] = [None] * count
    pos, low = 0, 0
    while pos < len(body):
        if pos + BLOCKHASH_RUN.size > len(body):
            raise SpecError("block-hash run header cut off")
        first, n = BLOCKHASH_RUN.unpack_from(body, pos)
        pos += BLOCKHASH_RUN.size
        if n < 1 or first < low or first + n > count or pos + 16 * n > len(body):
            raise SpecError("block-hash run out of order, past the disk or past the body")
        for i in range(n):
            digests[first + i] = body[pos + 16 * i:pos + 16 * (i + 1)]
        pos += 16 * n
        low = first + n
    full = _zero_digest(algorithm, bs)
    last = _zero_digest(algorithm, size - (count - 1) * bs) if count else full
    return algorithm, bs, size, [d if d is not None else (last if i == count - 1 else full)
                                 for i, d in enumerate(digests)]


def block_digests(disk: bytes, algorithm: str, bs: int) -> list[bytes]:
    def one(b: bytes) -> bytes:
        return xxhash.xxh3_128_digest(b) if algorithm == "xxh3-128" else blake3.blake3(b).digest(16)

    return [one(disk[i:i + bs]) for i in range(0, len(disk), bs)]


# -- building a small store with godwit's API --------------------------------------------------

@dataclass
class Sample:
    root: Path  # the project folder
    server_uid: str
    disk_uids: list[str]
    expected: list[list[bytes]]  # per committed cycle (1, 2, ...), each disk's source bytes

    @property
    def store(self) -> Path:
        return self.root / "cache"


def build_sample(root: Path, *, block_size_kib: int = 4, pack_size_mib: int = 32, hash_name: str = "xxh3-128",
                 big: bool = False) -> Sample:
    """Two disks, three cycles: data (compressible and not), holes, zero blocks, a partial last
    block, a disk that grows, and a cycle with no change at all. ``big`` adds MiBs of random data
    so that extents split at chunk boundaries and a cycle spans several packs."""
    from godwit.engine import lifecycle as replication
    from godwit.engine.inventory import add_server
    from godwit.project.project import init, open_project

    init(root, "sample").close()
    toml = root / "godwit.toml"
    text = toml.read_text().replace("block_size_kib = 64", f"block_size_kib = {block_size_kib}")
    text = text.replace("pack_size_mib = 32", f"pack_size_mib = {pack_size_mib}")
    toml.write_text(text.replace('hash = "xxh3-128"', f'hash = "{hash_name}"'))
    rng = random.Random(1)
    kib = 1024
    d0, d1 = root / "disk0.raw", root / "disk1.raw"
    with open(d0, "wb") as f:
        f.truncate(40 * kib + 1000)
        f.write(b"godwit format v1 " * 300)
        f.seek(12 * kib)
        f.write(rng.randbytes(4 * kib))
        f.seek(40 * kib)
        f.write(b"T" * 1000)
        if big:
            f.seek(1 << 20)
            f.write(rng.randbytes(9 << 20))
            f.seek(12 << 20)
            f.write(b"\x00" * 4096 + rng.randbytes(3000))
    with open(d1, "wb") as f:
        f.truncate(16 * kib)
        f.seek(4 * kib)
        f.write(b"second disk " * 100)
    sources = [d0, d1]
    expected: list[list[bytes]] = []
    project = open_project(root)
    try:
        add_server(project, "web01", [str(d0), str(d1)])
        replication.start(project, "web01")
        expected.append([p.read_bytes() for p in sources])
        with open(d0, "r+b") as f:
            f.write(bytes(4 * kib))  # a data block becomes zero
            f.seek(20 * kib)
            f.write(b"changed " * 64)  # a hole becomes data
            f.truncate(48 * kib + 100 + (14 << 20 if big else 0))  # grows, still not block-aligned
            f.seek(-100, os.SEEK_END)
            f.write(b"G" * 100)
            if big:
                f.seek(3 << 20)
                f.write(rng.randbytes(2 << 20))
        replication.cycle(project, "web01")
        expected.append([p.read_bytes() for p in sources])
        replication.cycle(project, "web01")  # nothing changed
        expected.append([p.read_bytes() for p in sources])
        server = project.db.server("web01")
        disk_uids = [d.uid for d in project.db.disks(server.id)]
    finally:
        project.close()
    return Sample(root, server.uid, disk_uids, expected)


# -- tests -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("block_size_kib", "pack_size_mib", "hash_name", "big"), [
    (4, 32, "xxh3-128", False),
    (64, 1, "blake3", True),
])
def test_spec_reader_reconstructs_every_cycle(tmp_path: Path, block_size_kib: int, pack_size_mib: int,
                                              hash_name: str, big: bool) -> None:
    sample = build_sample(tmp_path / "proj", block_size_kib=block_size_kib, pack_size_mib=pack_size_mib,
                          hash_name=hash_name, big=big)
    reader = SpecReader(sample.store)
    store_id = reader.store_config()["id"]
    assert reader.keys("servers/") == sorted(reader.keys(f"servers/{sample.server_uid}/"))
    assert reader.cycles(sample.server_uid) == [1, 2, 3]
    for cycle, disks in enumerate(sample.expected, start=1):
        check_rules(reader, sample.server_uid, cycle)
        doc = reader.manifest(sample.server_uid, cycle)
        assert doc["store_id"] == store_id and doc["hash"] == hash_name
        assert doc["block_size"] == block_size_kib * 1024
        assert doc["parent"] == (cycle - 1 or None)
        got = reader.reconstruct(sample.server_uid, cycle)
        assert got == dict(enumerate(disks)), f"cycle {cycle} does not reconstruct the source"
        for idx, uid in enumerate(sample.disk_uids):
            hashes = sample.root / "state" / "hashes" / uid / f"{cycle:010d}.bin"
            assert hashes.read_bytes()[4] == 2, "godwit writes block-hash files of version 2"
            algorithm, bs, size, digests = read_blockhashes(hashes)
            assert (algorithm, bs, size) == (hash_name, block_size_kib * 1024, len(disks[idx]))
            assert digests == block_digests(disks[idx], algorithm, bs)
    last = reader.manifest(sample.server_uid, 3)
    last_disks = last["disks"]
    assert isinstance(last_disks, list)
    assert last["packs"] == [] and all(d["extents"] == d["zeros"] == [] for d in last_disks)
    first_packs = reader.manifest(sample.server_uid, 1)["packs"]
    assert isinstance(first_packs, list) and (len(first_packs) > 1) == big


def test_spec_reader_refuses_damage(tmp_path: Path) -> None:
    sample = build_sample(tmp_path / "proj")
    reader = SpecReader(sample.store)
    doc = reader.manifest(sample.server_uid, 1)
    packs = doc["packs"]
    assert isinstance(packs, list)
    pack = sample.store / "servers" / sample.server_uid / "packs" / f"{packs[0]}.pack"
    data = bytearray(pack.read_bytes())
    data[len(PACK_HEADER) + 5] ^= 0x01  # inside the first blob
    pack.write_bytes(bytes(data))
    with pytest.raises(SpecError, match="checksum"):
        reader.reconstruct(sample.server_uid, 1)
    manifest = sample.store / "servers" / sample.server_uid / "cycles" / f"{2:010d}.manifest"
    manifest.write_bytes(manifest.read_bytes()[:-1])
    with pytest.raises(SpecError, match="trailer"):
        reader.manifest(sample.server_uid, 2)


def _fixture_expected() -> dict[str, object]:
    doc: dict[str, object] = json.loads((FIXTURE / "expected.json").read_text())
    return doc


def test_format_v1_fixture_reads_with_the_current_decoder() -> None:
    from godwit.engine.reader import iter_writes, load_manifest
    from godwit.format import blockhashes, manifest
    from godwit.format.pack import read_index
    from godwit.stores import LocalStore

    exp = _fixture_expected()
    uid = exp["server_uid"]
    cycles = exp["cycles"]
    disk_uids = exp["disk_uids"]
    assert isinstance(uid, str) and isinstance(cycles, list) and isinstance(disk_uids, list)
    store = LocalStore(FIXTURE / "store")
    replica: dict[int, bytearray] = {}
    for c in cycles:
        key = f"servers/{uid}/cycles/{c['cycle']:010d}.manifest"
        m = manifest.decode(store.get(key), key)
        assert m == load_manifest(store, uid, c["cycle"])
        assert (m.store_id, m.cycle, m.block_size, m.hash) == (exp["store_id"], c["cycle"], exp["block_size"],
                                                               exp["hash"])
        for p in m.packs():
            assert read_index(store.get(f"servers/{uid}/packs/{p}.pack"), p)
        for d in m.disks:
            buf = replica.setdefault(d.index, bytearray())
            assert len(buf) == d.previous_size
            buf.extend(bytes(d.size - len(buf)))
        for w in iter_writes(store, m):
            replica[w.disk][w.offset:w.offset + w.length] = w.data if w.data is not None else bytes(w.length)
        assert [{"index": i, "size": len(b), "blake3": blake3.blake3(b).hexdigest()}
                for i, b in sorted(replica.items())] == c["disks"]
        for idx, disk_uid in enumerate(disk_uids):
            path = FIXTURE / "hashes" / disk_uid / f"{c['cycle']:010d}.bin"
            size, digests = blockhashes.read(path, m.hash, m.block_size)
            assert size == len(replica[idx])
            assert bytes(digests) == b"".join(block_digests(bytes(replica[idx]), m.hash, m.block_size))


def test_format_v1_fixture_reads_with_the_spec_reader() -> None:
    exp = _fixture_expected()
    uid = exp["server_uid"]
    cycles = exp["cycles"]
    assert isinstance(uid, str) and isinstance(cycles, list)
    disk_uids = exp["disk_uids"]
    assert isinstance(disk_uids, list)
    reader = SpecReader(FIXTURE / "store")
    assert reader.store_config()["id"] == exp["store_id"]
    assert reader.cycles(uid) == [c["cycle"] for c in cycles]
    for c in cycles:
        check_rules(reader, uid, c["cycle"])
        got = reader.reconstruct(uid, c["cycle"])
        assert [{"index": i, "size": len(b), "blake3": blake3.blake3(b).hexdigest()}
                for i, b in sorted(got.items())] == c["disks"]
        for idx, disk_uid in enumerate(disk_uids):  # block-hash files of version 1
            path = FIXTURE / "hashes" / disk_uid / f"{c['cycle']:010d}.bin"
            assert path.read_bytes()[4] == 1
            algorithm, bs, size, digests = read_blockhashes(path)
            assert (algorithm, bs, size) == (exp["hash"], exp["block_size"], len(got[idx]))
            assert digests == block_digests(got[idx], algorithm, bs)


def test_spec_reader_reads_and_refuses_block_hash_files_of_version_2(tmp_path: Path) -> None:
    """Holes left out, a partial last block that is a hole, runs longer than the writer's limit;
    and every damage the spec names is refused."""
    from godwit.format import blockhashes

    bs = 4096
    size = bs * 70_000 + 100  # more blocks than one run of the writer holds
    rng = random.Random(7)
    hole, last_hole = _zero_digest("blake3", bs), _zero_digest("blake3", 100)
    digests = [hole] * 70_000 + [last_hole]
    for i in [3, *range(5, 69_000)]:  # data blocks (their digests: any value but a hole's)
        digests[i] = rng.randbytes(16)
    path = tmp_path / "h.bin"
    blockhashes.write(path, "blake3", bs, size, b"".join(digests))
    data = path.read_bytes()
    assert data[4] == 2 and len(data) < 16 * len(digests), "holes cost nothing"
    assert read_blockhashes(path) == ("blake3", bs, size, digests)
    head = BLOCKHASH_HEAD.size

    def sealed(b: bytes) -> bytes:
        return b + xxhash.xxh3_128_digest(b)

    damaged = {
        "trailer": data[:-1] + bytes([data[-1] ^ 1]),
        "truncated": data[:-40],
        "out of order": sealed(data[:head] + BLOCKHASH_RUN.pack(10, 1) + bytes(16)
                               + BLOCKHASH_RUN.pack(9, 1) + bytes(16)),
        "past the disk": sealed(data[:head] + BLOCKHASH_RUN.pack(70_001, 1) + bytes(16)),
        "cut off": sealed(data[:head] + b"\x00" * 5),
    }
    for what, raw in damaged.items():
        path.write_bytes(raw)
        with pytest.raises(SpecError):
            read_blockhashes(path)
        with pytest.raises(CorruptObjectError):  # and godwit's own reader agrees
            blockhashes.read(path, "blake3", bs)
        assert what


def test_blockhashes_v2_fixture_reads_with_both_readers() -> None:
    """Golden v2 files hold the same digests as their v1 twins, for the spec reader and godwit."""
    from godwit.format import blockhashes

    exp = _fixture_expected()
    cycles, disk_uids = exp["cycles"], exp["disk_uids"]
    assert isinstance(cycles, list) and isinstance(disk_uids, list)
    for c in cycles:
        for disk_uid in disk_uids:
            name = f"{c['cycle']:010d}.bin"
            v1, v2 = FIXTURE / "hashes" / disk_uid / name, FIXTURE_V2 / disk_uid / name
            assert v2.read_bytes()[4] == 2 and v2.stat().st_size < v1.stat().st_size
            assert read_blockhashes(v2) == read_blockhashes(v1)
            assert blockhashes.read(v2, exp["hash"], exp["block_size"]) == blockhashes.read(
                v1, exp["hash"], exp["block_size"])


def write_fixture(dest: Path, work: Path) -> None:
    """Produce a golden fixture in ``dest`` (run once per format version, then commit it)."""
    sample = build_sample(work / "proj")
    shutil.copytree(sample.store, dest / "store")
    for uid in sample.disk_uids:
        shutil.copytree(sample.root / "state" / "hashes" / uid, dest / "hashes" / uid)
    reader = SpecReader(sample.store)
    first = reader.manifest(sample.server_uid, 1)
    expected = {
        "format": 1,
        "store_id": reader.store_config()["id"],
        "server_uid": sample.server_uid,
        "disk_uids": sample.disk_uids,
        "block_size": first["block_size"],
        "hash": first["hash"],
        "cycles": [{"cycle": n, "disks": [{"index": i, "size": len(b), "blake3": blake3.blake3(b).hexdigest()}
                                          for i, b in enumerate(disks)]}
                   for n, disks in enumerate(sample.expected, start=1)],
    }
    (dest / "expected.json").write_text(json.dumps(expected, indent=2) + "\n")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_fixture(Path(sys.argv[1]), Path(tmp))
