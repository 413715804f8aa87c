"""Connecting to Temporal, and the server's search attributes."""

from __future__ import annotations

from temporalio.client import Client

from clientela.settings import Settings


async def connect(settings: Settings) -> Client:
    try:
        return await Client.connect(
            settings.temporal_address, namespace=settings.temporal_namespace
        )
    except RuntimeError as exc:
        raise ConnectionError(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); "
            "start the stack with `clientela up`"
        ) from None
