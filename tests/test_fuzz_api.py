"""Schemathesis over the API's own OpenAPI document, against the API as it is served.

Every operation gets generated requests, valid and invalid (bounded examples and time);
for each: no server error, a status code the document lists, and a body that matches the
document's schema for that status.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from temporalio.testing import WorkflowEnvironment

from clientela import ROOT
from clientela.settings import Settings
from tests.conftest import free_port
from tests.factories import make_customer
from tests.processes import start_api

CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> Iterator[str]:
    """The API in its own process (uvicorn, as `clientela up` runs it) on a fresh SQLite
    database holding a few customers; its base URL."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    port = free_port()
    templates = home.parent / "templates"  # the fuzzer writes templates: never the shipped ones
    shutil.copytree(ROOT / "templates", templates)
    settings = Settings(
        home=home,
        templates_dir=templates,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue="fuzz-nobody-polls",
        api_port=port,
    )
    for n in range(3):
        make_customer(settings.db_url, external_id=f"F{n}", email=f"f{n}@example.com")
    log = home / "api.log"
    server, base = start_api(settings, log)
    try:
        yield base
    finally:
        server.terminate()
        server.wait(10)
    errors = [line for line in log.read_text().splitlines() if "Traceback" in line]
    assert not errors, log.read_text()


def operations(base: str) -> list[schemathesis.APIOperation]:
    schema = schemathesis.openapi.from_url(f"{base}/openapi.json")
    return [result.ok() for result in schema.get_all_operations()]


# (schemathesis.pytest.from_fixture does not run under this pytest, so each operation's
# strategies are driven by hypothesis here, one parametrised test per operation and mode.)
OPERATIONS = [
    "POST /events",
    "POST /webhooks/twilio/status",
    "GET /u/{token}",
    "POST /u/{token}",
    "GET /r/{token}",
    "GET /campaigns/{campaign_id}/report",
    "GET /campaigns/{campaign_id}/report.html",
    "GET /customers/{customer_id}",
    "GET /complaints",
    "GET /complaints/{complaint_id}",
    "POST /complaints/{complaint_id}/response",
    "POST /complaints/{complaint_id}/resolution",
    "POST /complaints/{complaint_id}/satisfaction",
    "GET /s/{token}",
    "POST /s/{token}",
    "GET /service/report",
    "GET /service/report.html",
    "GET /health",
    "GET /ready",
    "GET /metrics",
    "GET /audit",
    "POST /campaigns/preview",
    "POST /campaigns",
    "POST /campaigns/{campaign_id}/{verdict}",
    "POST /campaigns/{campaign_id}/control/{action}",
    "GET /campaigns/{campaign_id}",
    "GET /campaigns",
    "GET /customers",
    "GET /customers/{customer_id}/explanation",
    "GET /journeys",
    "GET /journeys/runs",
    "GET /journeys/{name}/{customer_id}",
    "POST /journeys/{name}/{customer_id}/start",
    "POST /journeys/{name}/{customer_id}/cancel",
    "GET /rules",
    "POST /rules/check",
    "POST /rules/apply",
    "GET /rules/status/{ruleset}",
    "GET /templates",
    "GET /templates/{name}/{locale}",
    "PUT /templates/{name}/{locale}",
    "POST /templates/{name}/{locale}/preview",
    "GET /users",
    "POST /users",
    "PUT /users/{username}/roles",
    "POST /users/{username}/disable",
    "PUT /users/{username}/password",
    "GET /users/{username}/tokens",
    "POST /users/{username}/tokens",
    "POST /users/tokens/{token_id}/revoke",
    "DELETE /customers/{customer_id}",
    "GET /customers/{customer_id}/export",
    "POST /webhooks/twilio/inbound",
    "POST /webhooks/bounces",
    "GET /p/{token}",
    "POST /p/{token}",
    "GET /c/{token}",
    "HEAD /c/{token}",
    "GET /o/{token}",
    "HEAD /o/{token}",
    "GET /models",
    "GET /models/{name}",
]


def test_the_list_covers_every_operation(served: str) -> None:
    assert sorted(f"{o.method.upper()} {o.path}" for o in operations(served)) == sorted(OPERATIONS)


@pytest.mark.parametrize(
    ("name", "mode"),
    [
        (name, mode)
        for name in OPERATIONS
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        # (nothing to get wrong in a probe)
        if not (name in ("GET /health", "GET /ready") and mode == GenerationMode.NEGATIVE)
    ],
)
def test_every_operation_answers_as_documented(
    served: str, name: str, mode: GenerationMode
) -> None:
    [operation] = [o for o in operations(served) if f"{o.method.upper()} {o.path}" == name]

    @given(case=operation.as_strategy(generation_mode=mode))
    @hsettings(
        max_examples=50,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    def call(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=served, checks=CHECKS, timeout=30)

    call()
