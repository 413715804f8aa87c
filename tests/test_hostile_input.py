"""Hostile input at every door: a clear 4xx that names the field, and nothing changed."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import AsyncIterator
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlmodel import func, select
from temporalio.client import Client
from twilio.request_validator import RequestValidator

from activities.contracts import MessageRequest
from clientela.customers.records import import_customers
from clientela.db import session_scope
from clientela.devstack.sms_sink import SmsSink
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.messaging.channels.email import build_email
from clientela.messaging.sending import Sender
from clientela.messaging.templating import RenderedEmail
from clientela.settings import STATUS_CALLBACK_PATH, Settings, sink_auth_token
from models import Customer, Message, Transaction
from tests.factories import make_customer
from tests.processes import run_cli
from tests.serving import api


@pytest.fixture
async def http(client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api(client, settings) as c:
        yield c


def count(db_url: str, table: type) -> int:
    with session_scope(db_url) as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def fields_of(response: httpx.Response) -> list[str]:
    return [d["field"] for d in response.json()["detail"]]


SIGNUP = {"type": "signup", "first_name": "Eve", "email_consent": True}


# -- 1. header injection ---------------------------------------------------------------------


async def test_an_id_with_a_line_break_is_refused_and_nothing_is_stored(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    for hostile in ("T-ID\r\nBcc: spy@evil.example", "T ID", "T-ID\x00", "", "é" * 3, "a" * 129):
        r = await http.post(
            "/events", json={**SIGNUP, "external_id": hostile, "email": "t@example.com"}
        )
        assert r.status_code == 422, (hostile, r.text)
        assert fields_of(r) == ["external_id"], r.text
    assert count(settings.db_url, Customer) == 0


def test_an_import_refuses_the_same_ids(db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "c.jsonl"
    rows = [
        {"external_id": "T-ID\r\nBcc: spy@evil.example", "email": "t@example.com"},
        {"external_id": "ok-1", "email": "ok@example.com", "first_name": "Ann\r\nBcc: x@y.z"},
        {"external_id": "ok-2", "email": "ok2@example.com"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with session_scope(db_url) as session:
        result = import_customers(session=session, path=path)
    errors = [str(e) for e in result.errors]
    assert result.created == 1
    assert errors[0].startswith(f"{path}:1: external_id: ") and "not a valid id" in errors[0]
    assert errors[1].startswith(f"{path}:2: first_name: control character")


HEADERS_WRITTEN = {
    "from",
    "to",
    "subject",
    "date",
    "message-id",
    "x-clientela-key",
    "list-unsubscribe",
    "mime-version",
    "content-type",
}


@hsettings(max_examples=200, deadline=None)
@given(subject=st.text(), key=st.text(), link=st.text())
def test_the_email_builder_never_lets_a_value_start_a_header(
    subject: str, key: str, link: str
) -> None:
    """Whatever text reaches a header (CR, LF, NUL, non-ASCII), the message has exactly the
    headers we write, each once, and the recipient is the one given."""
    message = build_email(
        key=key,
        sender="Clientela <hello@clientela.example>",
        to="ana@example.com",
        content=RenderedEmail(subject=subject, text="t", html="h"),
        headers={"List-Unsubscribe": link},
    )
    head = message.data.split(b"\r\n\r\n", 1)[0]
    assert b"\n" not in head.replace(b"\r\n", b"")  # no bare LF
    assert b"\r" not in head.replace(b"\r\n", b"")  # no bare CR
    names = [
        line.split(b":", 1)[0].decode().lower()
        for line in head.split(b"\r\n")
        if line and line[:1] not in (b" ", b"\t")
    ]
    assert sorted(names) == sorted(HEADERS_WRITTEN), names
    parsed = BytesParser(policy=policy.default).parsebytes(message.data)
    assert parsed["To"] == "ana@example.com" and message.recipient == "ana@example.com"


# -- 2. addresses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    ["a,b@x.com", "x<y@x.com>", "Eve <eve@x.com>", "josé@exámple.com", "a@b", "a@@x.com"],
)
async def test_an_address_that_is_not_one_plain_mailbox_is_refused(
    http: httpx.AsyncClient, settings: Settings, address: str
) -> None:
    r = await http.post("/events", json={**SIGNUP, "external_id": "E1", "email": address})
    assert r.status_code == 422, r.text
    assert fields_of(r) == ["email"]
    assert "not a usable email address" in r.json()["detail"][0]["msg"]
    assert count(settings.db_url, Customer) == 0


async def test_an_internationalised_domain_is_kept_in_its_ascii_form(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    r = await http.post(
        "/events", json={**SIGNUP, "external_id": "E2", "email": "jose@exámple.com"}
    )
    assert r.status_code == 202, r.text
    view = (await http.get("/customers/E2")).json()
    assert view["profile"]["email"] == "jose@xn--exmple-qta.com"


# -- 3. one poisoned message ------------------------------------------------------------------


async def test_a_message_that_cannot_be_built_fails_alone(
    settings: Settings, catcher: SmtpCatcher
) -> None:
    good = [make_customer(settings.db_url, preferred_channel="email") for _ in range(3)]
    bad = make_customer(settings.db_url, preferred_channel="email")
    with session_scope(settings.db_url) as session:  # as an older version could have stored
        row = session.exec(select(Customer).where(Customer.external_id == bad)).one()
        row.email = "josé@exámple.com"
        session.add(row)
    sender = Sender(settings, "poison/1/1")
    reqs = [
        MessageRequest(key=f"poison:{c}", customer_id=c, template="welcome", channel="email")
        for c in [good[0], bad, *good[1:]]
    ]
    try:
        results = await sender.deliver_many(reqs)
    finally:
        await sender.close()
    states = [getattr(r, "state", None) for r in results]
    assert states == ["sent", "failed", "sent", "sent"], results
    assert "cannot build the message" in results[1].reason  # type: ignore[union-attr]
    assert "SMTPUTF8" in results[1].reason  # type: ignore[union-attr]
    with session_scope(settings.db_url) as session:
        row_bad = session.exec(select(Message).where(Message.key == f"poison:{bad}")).one()
    assert row_bad.state == "failed" and row_bad.attempts == 1
    assert len(read_outbox(settings.outbox_dir)) == 3


# -- 4. the SMS sink's token ------------------------------------------------------------------


def test_the_sms_sink_token_is_made_per_installation(tmp_path: Path) -> None:
    one = Settings(home=tmp_path / "one")
    two = Settings(home=tmp_path / "two")
    token = one.twilio_credentials[1]
    assert token == sink_auth_token(tmp_path / "one" / "sms") == one.twilio_credentials[1]
    assert token != two.twilio_credentials[1] and len(token) == 64
    assert "clientela-dev-token" not in (token, two.twilio_credentials[1])
    mode = stat.S_IMODE(os.stat(tmp_path / "one" / "sms" / "auth.token").st_mode)
    assert mode == 0o600
    assert SmsSink(tmp_path / "one" / "sms").auth_token == token


# -- 5. sizes --------------------------------------------------------------------------------


async def test_a_body_over_the_limit_is_refused_with_413(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    big = {**SIGNUP, "external_id": "BIG", "attributes": {"note": "x" * 2_000_000}}
    r = await http.post("/events", json=big)
    assert r.status_code == 413 and "larger than 1,048,576 bytes" in r.json()["detail"]

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        body = json.dumps(big).encode()
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    r = await http.post("/events", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert count(settings.db_url, Customer) == 0


async def test_attributes_are_bounded(http: httpx.AsyncClient, settings: Settings) -> None:
    r = await http.post(
        "/events", json={**SIGNUP, "external_id": "A1", "attributes": {"note": "x" * 1001}}
    )
    assert r.status_code == 422 and fields_of(r) == ["attributes"]
    many = {f"a{i}": i for i in range(101)}
    r = await http.post("/events", json={**SIGNUP, "external_id": "A1", "attributes": many})
    assert r.status_code == 422 and "at most 100 attributes" in r.text
    assert count(settings.db_url, Customer) == 0


# -- 6. what used to be a server error --------------------------------------------------------


async def test_numbers_beyond_64_bits_and_negative_limits_are_named(
    http: httpx.AsyncClient,
) -> None:
    for url, field in (
        (f"/complaints/{2**64}", "complaint_id"),
        ("/complaints/0", "complaint_id"),
        (f"/complaints?limit={2**64}", "limit"),
        ("/complaints?limit=-1", "limit"),
        ("/complaints?customer_id=a%0Ab", "customer_id"),
    ):
        r = await http.get(url)
        assert r.status_code == 422, (url, r.text)
        assert fields_of(r) == [field], r.text
    r = await http.post(f"/complaints/{2**64}/response", json={"by": "desk"})
    assert r.status_code == 422 and fields_of(r) == ["complaint_id"]


async def test_json_with_nan_or_a_lone_surrogate_gets_a_422_that_renders(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    bodies = [
        b'{"type": "signup", "external_id": "N1", "attributes": {"score": NaN}}',
        b'{"type": "signup", "external_id": "N1", "attributes": {"score": 1e999}}',
        b'{"type": "signup", "external_id": "\\ud800"}',
        b'{"type": "signup", "external_id": "N1", "first_name": "\\ud800"}',
        b'{"type": "conversion", "customer_id": "N1", "value": NaN}',
        b'{"type": "purchase", "customer_id": "N1", "amount": "-5.00"}',
        b'{"type": "purchase", "customer_id": "N1", "amount": 0}',
    ]
    make_customer(settings.db_url, external_id="N1")
    for body in bodies:
        r = await http.post("/events", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, (body, r.text)
        assert r.json()["detail"][0]["field"], r.text
    with session_scope(settings.db_url) as session:
        assert session.exec(select(Transaction)).all() == []
        n1 = session.exec(select(Customer).where(Customer.external_id == "N1")).one()
        assert "score" not in n1.attributes


@pytest.mark.parametrize("zone", ["localtime", "Factory", "posixrules", "Mars/Olympus", "../etc"])
async def test_time_zones_must_be_places(
    http: httpx.AsyncClient, settings: Settings, zone: str
) -> None:
    r = await http.post("/events", json={**SIGNUP, "external_id": "Z1", "timezone": zone})
    assert r.status_code == 422 and fields_of(r) == ["timezone"], r.text


async def test_form_bodies_that_are_not_utf8_are_refused_before_anything(
    http: httpx.AsyncClient, settings: Settings, sms_sink: SmsSink
) -> None:
    from clientela.messaging.links import survey_token

    for url in (STATUS_CALLBACK_PATH, f"/s/{survey_token(settings, 1, 'u')}"):
        for body in (b"MessageSid=SM1&MessageStatus=\xff", b"score=%ff%fe"):
            r = await http.post(
                url, content=body, headers={"content-type": "application/x-www-form-urlencoded"}
            )
            assert r.status_code == 400 and "not UTF-8" in r.text, (url, body, r.text)


async def test_a_signed_error_code_that_is_not_a_number_is_named(
    http: httpx.AsyncClient, settings: Settings, sms_sink: SmsSink
) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": "undelivered", "ErrorCode": "²"}
    url = f"{settings.recipient_base_url}{STATUS_CALLBACK_PATH}"
    signature = RequestValidator(settings.twilio_credentials[1]).compute_signature(url, params)
    r = await http.post(
        STATUS_CALLBACK_PATH, data=params, headers={"X-Twilio-Signature": signature}
    )
    assert r.status_code == 422 and fields_of(r) == ["ErrorCode"]


# -- 19. messages that say what to write ------------------------------------------------------


def test_cli_errors_keep_their_brackets(settings: Settings, tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "id: Bad Id\nname: x\nowner: me\ntarget_kpi: {metric: conversion_rate, uplift: 1}\n"
        "budget: 1\ncost_per_message: {email: 0.01}\ntemplate: spring_offer\ncontrol: 0.2\n"
    )
    r = run_cli(settings, "campaign", "preview", str(spec))
    assert r.returncode == 1
    assert "[a-z0-9]" in r.stderr, r.stderr
    assert f"{spec}:8:10: error: control: should be a group of `key: value` lines" in r.stderr


async def test_a_response_naming_a_campaign_that_does_not_exist_is_404(
    http: httpx.AsyncClient, settings: Settings
) -> None:
    cid = make_customer(settings.db_url)
    r = await http.post(
        "/events", json={"type": "click", "customer_id": cid, "campaign": "no-such-campaign"}
    )
    assert r.status_code == 404 and r.json()["detail"].startswith("campaign: no campaign")
    view = (await http.get(f"/customers/{cid}")).json()
    assert [h["kind"] for h in view["history"] if h["kind"] == "click"] == []


@pytest.mark.parametrize(
    ("source", "where", "what"),
    [
        ("name: a\nowner: b\x8d\n", "x.yaml:2:9:", "U+008D is not allowed"),
        ("name: a\nowner: =\n", "x.yaml:2:8:", "could not determine a constructor"),
        ("name: a\nsteps: [1\n", "x.yaml:3:1:", "expected ','"),
    ],
)
def test_yaml_that_cannot_be_read_is_a_problem_at_its_line(
    source: str, where: str, what: str
) -> None:
    """Found by the fuzzer: characters and tags YAML refuses once raised past the reporting."""
    from clientela.journeys.spec import JourneySpec
    from clientela.yamlfile import SpecError, load_model

    with pytest.raises(SpecError) as err:
        load_model(source, "x.yaml", JourneySpec, "docs/journeys.md")
    [problem] = err.value.problems
    assert str(problem).startswith(where) and what in str(problem), str(problem)
