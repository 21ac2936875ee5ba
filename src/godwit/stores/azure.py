"""The Azure Blob cache store (the ``lsa…`` cache account).

Packs and manifests are block blobs named by their keys. A put is atomic on Azure's side: one Put
Blob, or staged blocks that exist for nobody until Put Block List commits them. ``overwrite=False``
sends ``If-None-Match: *`` so a second writer of the same manifest gets a 409, never a silent
overwrite. Settings, clients and error mapping live in ``godwit.azure``, shared with the
page-blob replica and ``godwit store check``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from godwit.azure.clients import service_client
from godwit.azure.errors import error_code, map_error
from godwit.azure.settings import AzureSettings, parse_options
from godwit.errors import GodwitError, ObjectExistsError, ObjectMissingError
from godwit.stores.base import ObjectStore, validate_key

if TYPE_CHECKING:
    from godwit.network.route import Router


class AzureBlobStore(ObjectStore):
    """A cache store in one blob container. Thread-safe: one client, shared by the upload pool."""

    def __init__(self, settings: AzureSettings, *, service: Any = None) -> None:
        self.settings = settings
        self.description = f"azure blob {settings.account}/{settings.container}"
        self._service = service if service is not None else service_client(settings, "data")
        self._container = self._service.get_container_client(settings.container)
        self._validate = settings.validate_content if settings.validate_content != "none" else None

    def _fail(self, exc: Exception, what: str, key: str | None = None) -> GodwitError:
        from azure.core.exceptions import ResourceNotFoundError

        if key is not None and isinstance(exc, ResourceNotFoundError) and error_code(exc) in ("BlobNotFound", ""):
            return ObjectMissingError(f"object {key} is missing from {self.description}")
        return map_error(exc, self.settings, what)

    def put(self, key: str, data: bytes | memoryview, *, overwrite: bool = True) -> None:
        from azure.core.exceptions import HttpResponseError, ResourceExistsError

        validate_key(key)
        # The SDK iterates a memoryview byte by byte: hand it bytes.
        body = data if isinstance(data, bytes) else bytes(data)
        try:
            self._container.upload_blob(key, body, length=len(body), overwrite=overwrite,
                                        max_concurrency=self.settings.max_concurrency,
                                        validate_content=self._validate)
        except ResourceExistsError as exc:
            if not overwrite and error_code(exc) in ("BlobAlreadyExists", "ConditionNotMet", ""):
                raise ObjectExistsError(f"object {key} already exists in {self.description}; "
                                        "refusing to overwrite it") from None
            raise self._fail(exc, f"writing {key}") from None
        except HttpResponseError as exc:
            if not overwrite and exc.status_code == 412:
                raise ObjectExistsError(f"object {key} already exists in {self.description}; "
                                        "refusing to overwrite it") from None
            raise self._fail(exc, f"writing {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"writing {key}") from None

    def get(self, key: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_key(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        from azure.core.exceptions import HttpResponseError

        blob = self._container.get_blob_client(key)
        try:
            if length == 0:
                blob.get_blob_properties()  # still a missing key must raise
                return b""
            # No range for a whole read: the SDK then also handles an empty blob.
            stream = blob.download_blob(offset=None if offset == 0 and length is None else offset, length=length,
                                        max_concurrency=self.settings.max_concurrency,
                                        validate_content=self._validate)
            data: bytes = stream.readall()
            return data
        except HttpResponseError as exc:
            if exc.status_code == 416:  # a range starting at or past the end: nothing to read
                return b""
            raise self._fail(exc, f"reading {key}", key) from None
        except Exception as exc:
            raise self._fail(exc, f"reading {key}", key) from None

    def exists(self, key: str) -> bool:
        validate_key(key)
        try:
            return bool(self._container.get_blob_client(key).exists())
        except Exception as exc:
            raise self._fail(exc, f"looking up {key}") from None

    def size(self, key: str) -> int:
        validate_key(key)
        try:
            return int(self._container.get_blob_client(key).get_blob_properties().size)
        except Exception as exc:
            raise self._fail(exc, f"looking up {key}", key) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        try:
            # Uncommitted blobs (a put in flight) are never listed by the service.
            names = [str(n) for n in self._container.list_blob_names(name_starts_with=prefix or None)]
        except Exception as exc:
            raise self._fail(exc, f"listing {prefix or 'all objects'}") from None
        yield from sorted(names)

    def delete(self, key: str) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        validate_key(key)
        try:
            self._container.delete_blob(key, delete_snapshots="include")
        except ResourceNotFoundError as exc:
            if error_code(exc) == "ContainerNotFound":
                raise self._fail(exc, f"deleting {key}") from None
        except Exception as exc:
            raise self._fail(exc, f"deleting {key}") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._service.close()


def open_azure_store(options: dict[str, Any], root: Path, router: Router | None = None) -> AzureBlobStore:
    """The cache store for ``[cache] kind = "azure"``; ``options`` are the section's other keys.
    ``router``: the project's network plane (``[network]``), which then routes every request."""
    return AzureBlobStore(dataclasses.replace(parse_options(options, "cache", Path(root)), router=router))
