"""The object store interface that every cache store implements.

Keys are relative, slash-separated names (``servers/<uid>/packs/<id>.pack``). A store is dumb:
it moves bytes. Retry, throttling, stats and path enforcement wrap it (see ``wrappers``).
"""

from __future__ import annotations

import mmap
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator

from godwit.errors import UsageError

_KEY_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def validate_key(key: str) -> str:
    """Refuse names that could escape the store or mean different things on different stores."""
    parts = key.split("/")
    if not key or len(key) > 1024 or any(not _KEY_PART.match(p) or p in (".", "..") for p in parts):
        raise UsageError(f"invalid object name {key!r}: relative path of [A-Za-z0-9._-] parts expected")
    return key


class ObjectStore(ABC):
    """A flat namespace of immutable-by-convention objects.

    Contract, for every implementation (checked by ``tests/conformance/test_store_suite.py``):

    - ``put`` is atomic: a reader sees the whole object or no object, never a prefix, also when
      the writer dies mid-way. With ``overwrite=False`` it MUST raise
      :class:`~godwit.errors.ObjectExistsError` if the key exists, and leave it untouched.
    - ``get`` returns the object's bytes, or the ``length`` bytes from ``offset``; a missing key
      raises :class:`~godwit.errors.ObjectMissingError`.
    - ``list(prefix)`` yields every key that starts with ``prefix``, sorted; objects still in
      flight are not listed.
    - ``delete`` of a missing key is not an error (releases are retried after crashes).
    - Errors are mapped at the boundary to :class:`~godwit.errors.StoreError` subclasses
      (full, read-only, denied); no secret appears in any message.
    """

    #: A short description for messages and status ("local folder /x", "azure blob acct/cont").
    description: str = "store"

    @abstractmethod
    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None: ...

    @abstractmethod
    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes: ...

    def read_into(self, key: str, buf: mmap.mmap, offset: int = 0, length: int | None = None) -> memoryview | None:
        """Read like ``get`` into ``buf`` (page-aligned) and return the view holding the bytes, or
        None when this store has no such path (then use ``get``). The local store has one."""
        return None

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def delete(self, key: str) -> None: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the store must not be used afterwards."""
