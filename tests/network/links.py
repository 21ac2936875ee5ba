"""What the network tests measure and how they look inside a namespace: the accounts, the byte
counters of a link, a thread that lives in a namespace, and an admin client for an Azurite that
stays inside its own namespace (so that nothing it does crosses a link)."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_CLONE_NEWNET = 0x40000000


@dataclass(frozen=True)
class Account:
    """A storage account served by one Azurite, by its production-style name."""

    name: str
    namespace: str
    address: str
    key: str
    key_env: str

    @property
    def fqdn(self) -> str:
        return f"{self.name}.blob.core.windows.net"

    @property
    def privatelink_fqdn(self) -> str:
        return f"{self.name}.privatelink.blob.core.windows.net"

    @property
    def url(self) -> str:
        return f"https://{self.fqdn}"


@dataclass(frozen=True)
class LinkBytes:
    tx: int
    rx: int

    @property
    def total(self) -> int:
        return self.tx + self.rx

    def __sub__(self, other: LinkBytes) -> LinkBytes:
        return LinkBytes(self.tx - other.tx, self.rx - other.rx)

    def __add__(self, other: LinkBytes) -> LinkBytes:
        return LinkBytes(self.tx + other.tx, self.rx + other.rx)


@dataclass(frozen=True)
class Counters:
    """Bytes on the onprem end of each link (tx: sent by onprem)."""

    private: LinkBytes
    internet: LinkBytes

    def __sub__(self, other: Counters) -> Counters:
        return Counters(self.private - other.private, self.internet - other.internet)

    def __add__(self, other: Counters) -> Counters:
        return Counters(self.private + other.private, self.internet + other.internet)


def enter_netns(name: str) -> None:
    """Move the calling thread (only it) into namespace ``name``: its new sockets live there."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
    finally:
        os.close(fd)


def admin_call(account: Account, ca_file: Path, fn: Callable[[Any], T]) -> T:
    """``fn(BlobServiceClient)`` on ``account``, path-style to its address with TLS checked against its
    name: what a client pinned to a checked address does. Call it from the account's namespace."""
    import requests
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import BlobServiceClient
    from requests.adapters import HTTPAdapter

    class Pinned(HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs.update(server_hostname=account.fqdn, assert_hostname=account.fqdn)
            super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    session.trust_env = False
    session.mount("https://", Pinned())
    transport = RequestsTransport(session=session, session_owner=True, use_env_settings=False,
                                  connection_verify=str(ca_file))
    with BlobServiceClient(f"https://{account.address}/{account.name}", transport=transport,
                           credential=AzureNamedKeyCredential(account.name, account.key),
                           retry_total=0, connection_timeout=5, read_timeout=30) as svc:
        return fn(svc)

