"""Connecting to Temporal: the dev server, a self-hosted cluster over (mutual) TLS, or
Temporal Cloud with an API key (docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
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


def metrics_runtime(settings: Settings) -> Runtime | None:
    """A runtime whose Temporal SDK metrics (workflow and activity task latencies, polls,
    slots) Prometheus scrapes on ``temporal_metrics_port``; None when that is off."""
    if not settings.temporal_metrics_port:
        return None
    address = f"{settings.metrics_host}:{settings.temporal_metrics_port}"
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))


async def connect(settings: Settings, runtime: Runtime | None = None) -> Client:
    options = client_options(settings)
    if runtime is not None:
        options["runtime"] = runtime
    try:
        return await Client.connect(settings.temporal_address, **options)
    except RuntimeError as exc:
        raise ConnectionError(
            f"cannot reach Temporal at {settings.temporal_address} ({exc}); "
            "start the stack with `clientela up`, or check CLIENTELA_TEMPORAL_* (docs/deploy.md)"
        ) from None


def root_cause(exc: BaseException) -> BaseException | None:
    """What a failed workflow's chain of causes ends in: the activity's own error."""
    cause: BaseException | None = getattr(exc, "cause", None)
    while getattr(cause, "cause", None) is not None:
        cause = getattr(cause, "cause", None)
    return cause
