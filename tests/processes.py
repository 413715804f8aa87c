"""Running the project's own programs as separate processes, configured like production."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from clientela import ROOT
from clientela.settings import Settings


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a child process use exactly these settings."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CLIENTELA_")},
        "CLIENTELA_HOME": str(settings.home),
        "CLIENTELA_DATABASE_URL": settings.db_url,
        "CLIENTELA_TEMPORAL_ADDRESS": settings.temporal_address,
        "CLIENTELA_TASK_QUEUE": settings.task_queue,
        "CLIENTELA_CATCHER_PORT": str(settings.catcher_port),
        "CLIENTELA_SMTP_HOST": settings.smtp_host,
        "CLIENTELA_SMTP_PORT": str(settings.smtp_port),
        "CLIENTELA_EMAIL_IN_DOUBT": settings.email_in_doubt,
        "CLIENTELA_SEND_CONCURRENCY": str(settings.send_concurrency),
        "CLIENTELA_SMS_SINK_PORT": str(settings.sms_sink_port),
        "CLIENTELA_TEMPLATES_DIR": str(settings.templates_dir),
        "CLIENTELA_JOURNEYS_DIR": str(settings.journeys_dir),
        "CLIENTELA_PREDICTIVE_DIR": str(settings.predictive_dir),
        "CLIENTELA_SEND_LEASE": str(int(settings.send_lease.total_seconds())),
        "CLIENTELA_HEARTBEAT_TIMEOUT": str(int(settings.heartbeat_timeout.total_seconds())),
        "CLIENTELA_JOURNEY_TIME_SCALE": repr(settings.journey_time_scale),
        "CLIENTELA_SMS_HOURS": settings.sms_hours,
        "CLIENTELA_CAMPAIGN_LANES": str(settings.campaign_lanes),
        "CLIENTELA_CAMPAIGN_PAGE_SIZE": str(settings.campaign_page_size),
        "CLIENTELA_WORKER_METRICS_PORT": str(settings.worker_metrics_port),
        "CLIENTELA_LOG_FORMAT": settings.log_format,
        "CLIENTELA_WORKER_SHUTDOWN_GRACE": str(int(settings.worker_shutdown_grace.total_seconds())),
        "CLIENTELA_TEMPORAL_METRICS_PORT": str(settings.temporal_metrics_port),
    }


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "worker.py")],
            env=settings_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )


def run_cli(
    settings: Settings, *args: str, env: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "cli.py"), *args],
        env={**settings_env(settings), "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=120,
        cwd=ROOT,
    )


def start_api(settings: Settings, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The API (and the console) in its own process, as `clientela up` serves it, on
    ``settings.api_port``; the process and its base URL, once it answers."""
    import time

    import httpx

    with log.open("ab") as out:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "api.app:app_from_env",
                "--host",
                "127.0.0.1",
                "--port",
                str(settings.api_port),
                "--log-level",
                "warning",
            ],
            env={**settings_env(settings), "CLIENTELA_API_PORT": str(settings.api_port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    base = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise AssertionError(log.read_text())
        time.sleep(0.1)
