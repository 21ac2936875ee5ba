"""Connections to a checked address that still speak TLS to the name: DNS cannot change in between.

:func:`pinned_pool_manager` gives a urllib3 PoolManager whose connections open their socket to one
IP address while everything else stays the URL's: the ``Host`` header, the TLS server name (SNI)
and the certificate check, which must match the account's FQDN. The private path is checked on
the address it will use, and uses the address it checked.
"""

from __future__ import annotations

import socket
from typing import Any

from urllib3 import HTTPConnectionPool, HTTPSConnectionPool, PoolManager
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.connection import create_connection

from godwit.config.network import IPAddress


def _connect(conn: HTTPConnection, address: IPAddress) -> socket.socket:
    """What urllib3's ``_new_conn`` does, to ``address`` instead of the resolved host."""
    try:
        return create_connection((str(address), conn.port), conn.timeout, source_address=conn.source_address,
                                 socket_options=conn.socket_options)
    except TimeoutError as exc:
        raise ConnectTimeoutError(conn, f"connection to {conn.host} at {address} timed out "
                                        f"(connect timeout={conn.timeout})") from exc
    except OSError as exc:
        raise NewConnectionError(conn, f"failed to connect to {conn.host} at {address}: {exc}") from exc


def pinned_pool_manager(address: IPAddress, **kwargs: Any) -> PoolManager:
    """A PoolManager (``kwargs`` as urllib3's) whose every connection goes to ``address``."""

    class PinnedHTTP(HTTPConnection):
        pinned_address = address

        def _new_conn(self) -> socket.socket:
            return _connect(self, address)

    class PinnedHTTPS(HTTPSConnection):
        pinned_address = address

        def _new_conn(self) -> socket.socket:
            return _connect(self, address)

    class HTTPPool(HTTPConnectionPool):
        ConnectionCls = PinnedHTTP

    class HTTPSPool(HTTPSConnectionPool):
        ConnectionCls = PinnedHTTPS

    manager = PoolManager(**kwargs)
    manager.pool_classes_by_scheme = {"http": HTTPPool, "https": HTTPSPool}
    return manager
