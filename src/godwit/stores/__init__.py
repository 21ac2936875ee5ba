"""Object stores: the cache store's byte layer. One interface (:class:`ObjectStore`), small
implementations, and wrappers for the cross-cutting concerns (throttling, stats)."""

from godwit.stores.base import ObjectStore, validate_key
from godwit.stores.local import LocalStore

__all__ = ["LocalStore", "ObjectStore", "validate_key"]
