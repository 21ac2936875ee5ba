"""Migration's page-blob export: a recovery point copied to a new page blob (same account),
ready to become a managed disk."""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

from godwit.azure.clients import credential_for
from godwit.azure.errors import error_code, map_error
from godwit.azure.settings import AzureSettings
from godwit.errors import GodwitError, ReplicaError
from godwit.format import vhd
from godwit.replicas.pageblob.pages import MAX_PUT, PAGE
from godwit.replicas.pageblob.points import SnapshotReader
from godwit.replicas.pageblob.replica import PageBlobReplica


def copy_point_to_blob(replica: PageBlobReplica, number: int, dest_container: str, dest_name: str, *,
                       timeout: float = 3600.0) -> str:
    """Copy recovery point ``number`` to a new page blob (same account); returns its URL.

    A server-side copy from the snapshot: no data passes through this machine. Where the service
    refuses to authorise the source (an Entra identity without copy rights on it), the allocated
    page ranges are copied through here instead.
    """
    from azure.core.exceptions import HttpResponseError

    reader = replica.snapshot_reader(number)
    dest = replica._service.get_blob_client(dest_container, dest_name)
    what = f"copying recovery point {number} to {dest_container}/{dest_name}"
    try:
        try:
            dest.start_copy_from_url(_source_url(reader.blob.url, replica.settings))
        except HttpResponseError as exc:
            if exc.status_code not in (401, 403) or error_code(exc) in ("ContainerNotFound",):
                raise
            copy_ranges(reader, dest, replica)
            return _clean_url(str(dest.url))
        _wait_copy(dest, what, timeout)
        return _clean_url(str(dest.url))
    except GodwitError:
        raise
    except Exception as exc:
        raise map_error(exc, replica.settings, what, base=ReplicaError) from None


def _source_url(url: str, settings: AzureSettings) -> str:
    """A snapshot URL the service may read as a copy source: a SAS authorises only the request
    it signs, so the source carries one of its own; a key or an identity covers its own account."""
    if "sig=" in urlsplit(url).query:
        return url  # the SDK already put the client's SAS on it
    if settings.credential.kind in ("sas", "connection_string"):
        token = credential_for(settings)
        if isinstance(token, str):
            return f"{url}&{token}"
    return url


def _clean_url(url: str) -> str:
    """A blob's address without its query: a SAS must never be printed or stored."""
    return urlsplit(url)._replace(query="").geturl()


def _wait_copy(dest: Any, what: str, timeout: float = 3600.0) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        copy = dest.get_blob_properties().copy
        if copy.status in (None, "success"):
            return
        if copy.status in ("failed", "aborted"):
            raise ReplicaError(f"{what} {copy.status}: {copy.status_description or 'no reason given'}")
        if time.monotonic() > deadline:
            raise ReplicaError(f"{what} did not finish within {timeout:.0f} s",
                               hint="it continues on the service; check the blob's copy status later")
        time.sleep(delay)
        delay = min(delay * 2, 2.0)


def copy_ranges(reader: SnapshotReader, dest: Any, replica: PageBlobReplica) -> None:
    """The page-by-page copy through this machine: allocated pages, padding, then the footer."""
    length = vhd.rounded_size(reader.size) + vhd.FOOTER_SIZE
    dest.create_page_blob(length)
    for offset, size in reader.allocated() or []:
        end = -(-(offset + size) // PAGE) * PAGE  # whole pages; past the disk's end they are padding
        for p in range(offset, end, MAX_PUT):
            n = min(MAX_PUT, end - p)
            data = reader.read(p, min(n, reader.size - p))  # read() refuses to go past the disk's end
            dest.upload_page(data.ljust(n, b"\0"), offset=p, length=n)
    footer = vhd.footer(vhd.rounded_size(reader.size), uuid=replica._uuid, timestamp=replica._created)
    dest.upload_page(footer, offset=length - vhd.FOOTER_SIZE, length=vhd.FOOTER_SIZE)
