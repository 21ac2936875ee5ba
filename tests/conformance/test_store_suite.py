"""The object-store contract (stores/base.py), run against every store implementation."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from godwit.errors import ObjectExistsError, ObjectMissingError, UsageError
from godwit.stores import LocalStore
from godwit.stores.base import ObjectStore
from godwit.stores.throttle import ThrottledStore, TokenBucket

# Fast enough for the suite (~50 MB/s), slow enough that the bucket really sleeps on large puts.
THROTTLE_MBPS = 400.0


@pytest.fixture(params=["local", "throttled", pytest.param("azure", marks=pytest.mark.azure)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ObjectStore]:
    if request.param in ("local", "throttled"):
        (tmp_path / "cache").mkdir()
        s: ObjectStore = LocalStore(tmp_path / "cache")
        if request.param == "throttled":
            s = ThrottledStore(s, TokenBucket(lambda: THROTTLE_MBPS))
    else:
        s = request.getfixturevalue("azure_store")
    yield s
    s.close()


def test_put_get_round_trip(store: ObjectStore) -> None:
    store.put("a/b/c.pack", b"hello world")
    assert store.get("a/b/c.pack") == b"hello world"
    assert store.get("a/b/c.pack", 6) == b"world"
    assert store.get("a/b/c.pack", 0, 5) == b"hello"
    assert store.get("a/b/c.pack", 3, 2) == b"lo"
    assert store.size("a/b/c.pack") == 11
    assert store.exists("a/b/c.pack")
    assert not store.exists("a/b/d.pack")


def test_large_object_round_trip(store: ObjectStore) -> None:
    data = bytes(range(256)) * (40 * 1024 + 3)  # ~10 MiB, not a multiple of any block size
    store.put("big", memoryview(data))
    assert store.get("big") == data
    assert store.get("big", 5_000_000, 1000) == data[5_000_000:5_001_000]


def test_empty_object(store: ObjectStore) -> None:
    store.put("empty", b"")
    assert store.get("empty") == b""
    assert store.size("empty") == 0


def test_overwrite_and_conditional_create(store: ObjectStore) -> None:
    store.put("k", b"one")
    store.put("k", b"two")
    assert store.get("k") == b"two"
    with pytest.raises(ObjectExistsError):
        store.put("k", b"three", overwrite=False)
    assert store.get("k") == b"two"
    store.put("new", b"x", overwrite=False)
    assert store.get("new") == b"x"


def test_conditional_create_race_has_one_winner(store: ObjectStore) -> None:
    wins: list[int] = []
    errors: list[Exception] = []

    def attempt(i: int) -> None:
        try:
            store.put("race", str(i).encode(), overwrite=False)
            wins.append(i)
        except ObjectExistsError:
            pass
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(wins) == 1
    assert store.get("race") == str(wins[0]).encode()


def test_list_is_sorted_and_prefixed(store: ObjectStore) -> None:
    for k in ["s/2/x", "s/1/y", "s/1/a", "t/z", "s10"]:
        store.put(k, b".")
    assert list(store.list("s/")) == ["s/1/a", "s/1/y", "s/2/x"]
    assert list(store.list("s")) == ["s/1/a", "s/1/y", "s/2/x", "s10"]
    assert list(store.list("nothing/")) == []
    assert "t/z" in list(store.list())


def test_missing_objects(store: ObjectStore) -> None:
    with pytest.raises(ObjectMissingError):
        store.get("no/such")
    with pytest.raises(ObjectMissingError):
        store.size("no/such")
    store.delete("no/such")  # idempotent


def test_delete(store: ObjectStore) -> None:
    store.put("d/1", b"1")
    store.delete("d/1")
    assert not store.exists("d/1")
    assert list(store.list("d/")) == []


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "../x", "a/./b", "sp ace", "x" * 2000, "a/"])
def test_hostile_names_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(UsageError):
        store.put(key, b"x")


def test_page_aligned_buffer_round_trip(store: ObjectStore) -> None:
    """Packs are built in reused page-aligned buffers (the local store writes them with O_DIRECT)."""
    import mmap
    import os

    buf = mmap.mmap(-1, 4 << 20)
    data = os.urandom((3 << 20) + 1234)  # an unaligned tail after the aligned part
    buf[:len(data)] = data
    view = memoryview(buf)[:len(data)]
    store.put("aligned", view)
    buf[:100] = b"\0" * 100  # the buffer is reused once put returns
    del view
    assert store.get("aligned") == data
    buf.close()


def test_throttled_store_holds_its_rate(tmp_path: Path) -> None:
    """The wrapper in the suite above really limits: puts wait for the bucket, gets do not."""
    bucket = TokenBucket(lambda: 160.0)  # 20 MB/s; the bucket starts empty
    store = ThrottledStore(LocalStore(tmp_path), bucket)
    data = bytes(8 << 20)
    t0 = time.monotonic()
    store.put("slow", data)
    elapsed = time.monotonic() - t0
    assert 0.3 <= elapsed < 5, elapsed  # 8.4 MB at 20 MB/s: ~0.42 s
    assert bucket.held_seconds > 0.3
    t0 = time.monotonic()
    assert store.get("slow") == data
    assert time.monotonic() - t0 < 0.3 and bucket.held_seconds < 0.6
    store.close()
