"""Azure SDK clients with godwit's retry, transport, TLS and upload-size settings.

Every client is built for a network plane (``azure.transport``): its requests and its
credential's token requests each get a transport from :func:`~godwit.azure.transport.build_transport`.
"""

from __future__ import annotations

import random
from typing import Any

from godwit.azure.credentials import build_credential
from godwit.azure.settings import MIB, AzureSettings
from godwit.azure.transport import Plane, build_transport


def retry_policy(settings: AzureSettings) -> Any:
    from azure.storage.blob import ExponentialRetry

    class GodwitRetry(ExponentialRetry):
        """The SDK's storage retry (500, 503, 408, timeouts, resets) with a scalable backoff.

        The stock curve starts at 15 s with ±3 s jitter; ours is ``backoff * 2**n`` ±20%, capped at
        a minute, so tests can set it near zero and people can stretch it.
        """

        def get_backoff_time(self, retry_settings: dict[str, Any]) -> float:
            base = min(60.0, settings.retry_backoff_seconds * 2.0 ** int(retry_settings["count"]))
            return base * random.uniform(0.8, 1.2)

    return GodwitRetry(retry_total=settings.retries)


def client_kwargs(settings: AzureSettings, plane: Plane, *, pool: int = 16) -> dict[str, Any]:
    """Keyword arguments for any azure-storage-blob client of ``plane``: retry, transport, sizes."""
    return {
        "retry_policy": retry_policy(settings),
        "transport": build_transport(plane, settings, pool=pool),
        "max_single_put_size": settings.single_put_mib * MIB,
        "max_block_size": settings.block_size_mib * MIB,
        # Blocks read straight from the caller's buffer rather than copied first (the SDK does so
        # only when no MD5 is asked for: an MD5 needs the whole block in memory anyway).
        "min_large_block_upload_threshold": 1 * MIB + 1,
        "max_single_get_size": 32 * MIB,
        "max_chunk_get_size": 4 * MIB,
        **settings.extra,
    }


def credential_for(settings: AzureSettings) -> Any:
    """The SDK credential for ``settings``; token requests (Entra ID) travel the control plane."""
    return build_credential(settings.credential, settings.account,
                            transport=lambda: build_transport("control", settings), retries=settings.retries)


def service_client(settings: AzureSettings, plane: Plane, *, pool: int = 16) -> Any:
    """A BlobServiceClient for ``settings``; reads the secret now (ConfigError if it is missing)."""
    from azure.storage.blob import BlobServiceClient

    return BlobServiceClient(settings.account_url, credential=credential_for(settings),
                             **client_kwargs(settings, plane, pool=pool))
