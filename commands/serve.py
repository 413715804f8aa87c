"""`clientela serve api|worker`: the production entry points (docs/deploy.md).

Neither starts anything else: Temporal, PostgreSQL and the mail relay are the
installation's own. Both stop gracefully on SIGTERM: the API finishes the requests in
flight; the worker stops polling, gives running activities CLIENTELA_WORKER_SHUTDOWN_GRACE to
finish, and Temporal hands whatever is left to another worker.
"""

from __future__ import annotations

from typing import Annotated

import typer

from commands.common import fail, out, settings

serve_app = typer.Typer(
    help="Production processes: the HTTP API, a worker (docs/deploy.md).", no_args_is_help=True
)


@serve_app.command("api")
def serve_api(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Processes serving the API (one per core)")
    ] = 1,
    forwarded_allow_ips: Annotated[
        str, typer.Option(help="Proxies trusted for X-Forwarded-* (comma-separated)")
    ] = "127.0.0.1",
) -> None:
    """Serve the HTTP API and the console on CLIENTELA_API_HOST:CLIENTELA_API_PORT."""
    import uvicorn

    from clientela.db import SchemaOutdated, get_engine

    s = settings()
    try:
        get_engine(s.db_url)  # a database it cannot use is said now, not at the first request
    except SchemaOutdated as exc:
        raise fail(str(exc)) from None
    out.print(f"Serving the API on http://{s.api_host}:{s.api_port} ({workers} process(es))")
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=s.api_host,
        port=s.api_port,
        workers=workers,
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        timeout_graceful_shutdown=30,
        log_level="info",
        log_config=None,  # the app's own (CLIENTELA_LOG_FORMAT), uvicorn's records included
    )


@serve_app.command("worker")
def serve_worker() -> None:
    """Run one worker: every workflow and activity, on CLIENTELA_TASK_QUEUE. Run as many as
    the load needs, on as many machines; they share the work through Temporal."""
    import worker as worker_module

    worker_module.main()
