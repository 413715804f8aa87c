"""Connecting to Temporal: the dev server, a self-hosted cluster over (mutual) TLS, or
Temporal Cloud with an API key (docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.service import TLSConfig

from clientela.settings import Settings


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments of ``Client.connect`` that these settings make."""
    options: dict[str, Any] = {"namespace": settings.temporal_namespace}
    wants_tls = (
        settings.temporal_tls
        or settings.temporal_tls_ca is not None
        or settings.temporal_tls_cert is not None
        or bool(settings.temporal_api_key)
    )
    if wants_tls:
        tls = TLSConfig(
            server_root_ca_cert=(
                settings.temporal_tls_ca.read_bytes() if settings.temporal_tls_ca else None
            ),
            client_cert=(
                settings.temporal_tls_cert.read_bytes() if settings.temporal_tls_cert else None
            ),
            client_private_key=(
                settings.temporal_tls_key.read_bytes() if settings.temporal_tls_key else None
            ),
            domain=settings.temporal_tls_server_name or None,
        )
        options["tls"] = tls
    if settings.temporal_api_key:
        options["api_key"] = settings.temporal_api_key
    return options


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(settings.temporal_address, **client_options(settings))
    except RuntimeError as exc:
        raise ConnectionError(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); "
            "start the stack with `clientela up`, or check CLIENTELA_TEMPORAL_* (docs/deploy.md)"
        ) from None
