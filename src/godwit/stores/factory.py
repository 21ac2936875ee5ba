"""Builds the configured cache store."""

from __future__ import annotations

from typing import TYPE_CHECKING

from godwit.errors import ConfigError
from godwit.stores.base import ObjectStore
from godwit.stores.local import LocalStore

if TYPE_CHECKING:
    from godwit.project import Project


def open_store(project: Project) -> ObjectStore:
    kind = project.config.cache.kind
    if kind == "local":
        return LocalStore(project.cache_dir)
    if kind == "azure":
        from godwit.stores.azure import open_azure_store

        return open_azure_store(project.config.cache.options, project.root)
    raise ConfigError(f"unknown cache kind {kind!r}")
