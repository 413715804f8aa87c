"""Production settings and entry points: the Temporal client a cluster needs (TLS, mutual
TLS, Temporal Cloud's API key), `clientela serve api`, and the readiness probe."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError
from temporalio.client import Client

from clientela import ROOT
from clientela.settings import Settings
from clientela.temporal import client_options
from tests.conftest import free_port
from tests.processes import settings_env
from tests.serving import api


def test_the_dev_server_needs_nothing_but_a_namespace(tmp_path: Path) -> None:
    assert client_options(Settings(home=tmp_path)) == {"namespace": "default"}


def test_tls_with_a_private_ca_and_a_client_certificate(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    ca.write_bytes(b"CA PEM")
    cert.write_bytes(b"CERT PEM")
    key.write_bytes(b"KEY PEM")
    options = client_options(
        Settings(
            home=tmp_path,
            temporal_namespace="marketing",
            temporal_tls_ca=ca,
            temporal_tls_cert=cert,
            temporal_tls_key=key,
            temporal_tls_server_name="temporal.internal",
        )
    )
    tls = options["tls"]
    assert options["namespace"] == "marketing" and "api_key" not in options
    assert tls.server_root_ca_cert == b"CA PEM"
    assert (tls.client_cert, tls.client_private_key) == (b"CERT PEM", b"KEY PEM")
    assert tls.domain == "temporal.internal"


def test_temporal_cloud_takes_an_api_key_over_tls(tmp_path: Path) -> None:
    options = client_options(
        Settings(home=tmp_path, temporal_namespace="acme.a1b2c", temporal_api_key="k-123")
    )
    assert options["api_key"] == "k-123"
    tls = options["tls"]  # the system's CAs: Temporal Cloud's certificate is public
    assert tls.server_root_ca_cert is None and tls.client_cert is None
    plain_tls = client_options(Settings(home=tmp_path, temporal_tls=True))
    assert plain_tls["tls"].server_root_ca_cert is None and "api_key" not in plain_tls


@pytest.mark.parametrize(
    ("given", "said"),
    [
        ({"temporal_tls_cert": "CERT"}, "TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY go together"),
        ({"temporal_tls_ca": "nowhere.pem"}, "temporal_tls_ca: no such file"),
        ({"temporal_api_key": "changeme"}, "temporal_api_key is set to a placeholder"),
    ],
)
def test_a_broken_cluster_setting_is_refused_by_name(
    tmp_path: Path, given: dict[str, str], said: str
) -> None:
    values = dict(given)
    if "temporal_tls_cert" in values:
        (tmp_path / "CERT").write_text("x")
        values["temporal_tls_cert"] = str(tmp_path / "CERT")
    with pytest.raises(ValidationError, match=said):
        Settings(home=tmp_path, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "env", "said"),
    [
        (
            ["worker.py"],
            {"CLIENTELA_WORKFLOW_SANDBOX": "bogus"},
            "CLIENTELA_WORKFLOW_SANDBOX (workflow_sandbox): Input should be 'fast' or 'strict'",
        ),
        (
            ["cli.py", "serve", "worker"],
            {"CLIENTELA_CAMPAIGN_LANES": "99"},
            "CLIENTELA_CAMPAIGN_LANES (campaign_lanes): Input should be less than or equal to 32",
        ),
    ],
)
def test_a_worker_refuses_a_bad_setting_in_one_line(
    tmp_path: Path, entry: list[str], env: dict[str, str], said: str
) -> None:
    """Said as the CLI says it, naming the variable; no traceback, and nothing started."""
    done = subprocess.run(
        [sys.executable, *(str(ROOT / entry[0]), *entry[1:])],
        env={**os.environ, "CLIENTELA_HOME": str(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode != 0
    assert f"error: configuration: {said}" in done.stderr
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    assert not (tmp_path / "clientela.db").exists()


async def test_ready_says_what_is_not_reachable(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    async with api(client, settings) as http:
        got = await http.get("/ready")
        assert got.status_code == 200
        assert got.json() == {"status": "ready", "checks": {"database": "ok", "temporal": "ok"}}
    nowhere = settings.model_copy(update={"temporal_address": f"127.0.0.1:{free_port()}"})
    async with api(None, nowhere) as http:  # type: ignore[arg-type]
        got = await http.get("/ready")
        assert got.status_code == 503
        body = got.json()
        assert body["status"] == "not ready" and body["checks"]["database"] == "ok"
        assert body["checks"]["temporal"].startswith("unreachable: cannot reach Temporal")
        assert (await http.get("/health")).status_code == 200  # alive all the same


def test_serve_api_answers_and_stops_on_sigterm(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**settings_env(settings), "CLIENTELA_API_PORT": str(port)}
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, str(ROOT / "cli.py"), "serve", "api"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                got = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "the API never answered"
                time.sleep(0.2)
        assert got.status_code == 200 and got.json()["status"] == "ready"
        server.send_signal(signal.SIGTERM)
        # uvicorn finishes what is in flight, then exits by the signal it was sent (as
        # service managers expect of a SIGTERM).
        assert server.wait(30) in (0, -signal.SIGTERM)
        said = (tmp_path / "serve.log").read_text()
        assert "Application shutdown complete" in said and "Traceback" not in said
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_the_worker_compiles_the_workflow_modules_it_will_import_again(tmp_path: Path) -> None:
    """Temporal's sandbox imports a workflow's modules again for every run: from bytecode,
    not by compiling the source each time (``worker.compile_bytecode``, bench.welcome)."""
    import importlib.util

    import worker

    source = tmp_path / "workflows" / "greeting.py"
    source.parent.mkdir()
    source.write_text("def hello() -> str:\n    return 'hola'\n")
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert not cached.exists()
    assert worker.compile_bytecode(tmp_path)
    assert cached.exists()
    # Stale bytecode is written again when the source changes.
    first = cached.read_bytes()
    source.write_text("def hello() -> str:\n    return 'hello, again'\n")
    later = source.stat().st_mtime + 60  # (compileall compares whole seconds)
    os.utime(source, (later, later))
    assert worker.compile_bytecode(tmp_path)
    assert cached.read_bytes() != first
