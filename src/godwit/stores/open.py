"""Builds the configured cache store from its `[cache]` section (no wrappers: the project adds them)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from godwit.config.model import CacheConfig
from godwit.errors import ConfigError
from godwit.stores.base import ObjectStore
from godwit.stores.local import LocalStore

if TYPE_CHECKING:
    from godwit.network.route import Router


def open_store(cache: CacheConfig, root: Path, router: Router | None = None) -> ObjectStore:
    """The raw store for ``cache``; relative paths are taken from the project folder ``root``.
    ``router`` (the project's ``[network]`` plane) routes an Azure store's every request."""
    if cache.kind == "local":
        return LocalStore((root / cache.path).resolve())
    if cache.kind == "azure":
        from godwit.stores.azure import open_azure_store

        return open_azure_store(cache.options, root, router)
    raise ConfigError(f"unknown cache kind {cache.kind!r}")
