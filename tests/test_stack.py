"""`clientela up` as a user runs it: every service starts, a sign-up becomes an email, and
`clientela down` stops it all."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from clientela.devstack.smtp_catcher import read_outbox
from clientela.devstack.stack import port_open
from clientela.settings import Settings
from tests.conftest import free_ports
from tests.processes import run_cli


@pytest.fixture
def stack_settings(tmp_path: Path) -> Settings:
    temporal, ui, api, catcher, sms = free_ports(5)
    return Settings(
        home=tmp_path / "home",
        temporal_address=f"127.0.0.1:{temporal}",
        temporal_ui_port=ui,
        api_port=api,
        catcher_port=catcher,
        sms_sink_port=sms,
        journey_time_scale=1 / (2 * 24 * 3600),
        sms_hours="00:00-24:00",  # the test runs at any hour
    )


def stack_env(s: Settings) -> dict[str, str]:
    return {
        "CLIENTELA_TEMPORAL_UI_PORT": str(s.temporal_ui_port),
        "CLIENTELA_API_PORT": str(s.api_port),
        "CLIENTELA_DATABASE_URL": "",
        # A delivery report lost on the way is looked up with the sink within seconds.
        "CLIENTELA_SWEEP_INTERVAL": "1",
        "CLIENTELA_DELIVERY_REPORT_WAIT": "2",
    }


def test_up_runs_the_whole_stack_and_down_stops_it(stack_settings: Settings) -> None:
    s = stack_settings
    env = stack_env(s)
    up = run_cli(s, "up", "--detach", env=env)
    try:
        assert up.returncode == 0, up.stderr + (s.home / "logs" / "up.log").read_text()
        ports = [s.temporal_port, s.temporal_ui_port, s.api_port, s.catcher_port, s.sms_sink_port]
        assert all(port_open(p) for p in ports)
        signup = {
            "type": "signup",
            "external_id": "STACK-1",
            "first_name": "Noa",
            "email": "noa@example.com",
            "phone": "+34612000111",
            "locale": "es",
            "email_consent": True,
            "sms_consent": True,
            "preferred_channel": "sms",
        }
        r = httpx.post(f"http://127.0.0.1:{s.api_port}/events", json=signup, timeout=30)
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + 60
        sms_store = s.sms_dir / "messages.jsonl"
        while time.monotonic() < deadline:
            if sms_store.is_file() and len(sms_store.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        texts = [json.loads(line)["body"] for line in sms_store.read_text().splitlines()]
        assert texts[0].startswith("¡Bienvenido/a Noa!")
        assert texts[1].startswith("Noa, tu cuenta está lista")  # no response: the reminder
        status = run_cli(s, "journey", "status", "welcome", "STACK-1", "--json", env=env)
        assert json.loads(status.stdout)["step"] == "done"
        assert read_outbox(s.outbox_dir) == []  # SMS was preferred; no email went out
        # The sink reported delivery to the API's status callback, signed as Twilio signs (or,
        # were a report lost, the API's sweep looks the message up): wait for the state.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            shown = run_cli(s, "customers", "show", "STACK-1", "--json", env=env)
            states = [m["state"] for m in json.loads(shown.stdout)["messages"]]
            if states == ["delivered", "delivered"]:
                break
            time.sleep(0.3)
        assert states == ["delivered", "delivered"]
        again = run_cli(s, "up", "--detach", env=env)
        assert again.returncode == 1 and "is already in use" in again.stderr
    finally:
        down = run_cli(s, "down", env=env)
    assert down.returncode == 0 and "Stopped." in down.stdout, down.stderr
    assert not any(port_open(p) for p in ports)


def test_a_port_in_use_is_named(stack_settings: Settings) -> None:
    s = stack_settings
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", s.api_port))
        blocker.listen()
        r = run_cli(s, "up", env=stack_env(s))
    assert r.returncode == 1
    assert f"port {s.api_port} (api) is already in use" in r.stderr.replace("\n", " ")


def test_the_demo_says_every_excluded_customer_once() -> None:
    from commands.stack import excluded_line

    many = {"email: no consent": 40, "email: no address": 3, "duplicate": 9, "cap": 20, "x": 1}
    assert excluded_line(many) == (
        "excluded, 73 in all: email: no consent (40); cap (20); duplicate (9); 2 other reasons (4)"
    )
    assert excluded_line({"a": 2, "b": 1}) == "excluded, 3 in all: a (2); b (1)"
    assert excluded_line({"a": 2, "b": 1, "c": 1, "d": 1}, top=3).endswith("1 other reason (1)")
