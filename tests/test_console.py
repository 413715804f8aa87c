"""The console's sign-in, sessions, form tokens, roles and languages, over HTTP on SQLite and
PostgreSQL (the browser tests drive the pages themselves: test_console_browser.py)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from datetime import timedelta

import httpx
from sqlmodel import select
from temporalio.client import Client

from api.app import create_app
from clientela.db import session_scope
from clientela.people import audit
from clientela.people.users import add_user, disable
from clientela.settings import Settings
from clientela.timeutil import utcnow
from console.i18n import catalog, messages
from models.people import ConsoleSession
from tests.factories import make_customer

PASSWORD = "a-password-long-enough"


def team(settings: Settings) -> None:
    with session_scope(settings.db_url) as session:
        for username, roles in (
            ("marta", ["marketer"]),
            ("pablo", ["desk"]),
            ("root", ["admin"]),
        ):
            add_user(session, actor="test", username=username, roles=roles, password=PASSWORD)


@contextlib.asynccontextmanager
async def browser(
    client: Client, settings: Settings, base: str = "http://console.test"
) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps cookies, as a browser does, of the API with its console."""
    app = create_app(settings, client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base) as http,
    ):
        yield http


def token_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found[1]


async def sign_in(
    http: httpx.AsyncClient, username: str, password: str = PASSWORD
) -> httpx.Response:
    form = await http.get("/console/sign-in")
    return await http.post(
        "/console/sign-in",
        data={
            "csrf": token_of(form.text),
            "username": username,
            "password": password,
            "next": "/console/customers",
        },
    )


def test_every_string_of_the_console_is_in_spanish() -> None:
    spanish = catalog("es")
    used = messages()
    assert len(used) > 300
    missing = sorted(m for m in used if m not in spanish)
    assert not missing, f"console/locale/es.po lacks: {missing}"


async def test_signing_in_sets_a_session_cookie_that_scripts_cannot_read(
    client: Client, settings: Settings
) -> None:
    team(settings)
    async with browser(client, settings) as http:
        r = await http.get("/console/customers")
        assert r.status_code == 303
        assert r.headers["location"] == "/console/sign-in?next=/console/customers"
        r = await sign_in(http, "marta")
        assert r.status_code == 303 and r.headers["location"] == "/console/customers"
        cookie = r.headers["set-cookie"]
        assert "clientela_session=" in cookie and "HttpOnly" in cookie
        assert "SameSite=lax" in cookie and "Path=/console" in cookie
        assert "Secure" not in cookie  # plain HTTP: a Secure cookie would never come back
        page = await http.get("/console/customers")
        assert page.status_code == 200 and "Find a customer" in page.text
    # Behind TLS the cookie is Secure.
    async with browser(client, settings, "https://console.test") as https:
        r = await sign_in(https, "marta")
        assert "Secure" in r.headers["set-cookie"]
    with session_scope(settings.db_url) as session:
        trail = audit.recent(session, subject="user:marta")
    assert [e.action for e in trail] == ["session.signed_in", "session.signed_in", "user.added"]


async def test_wrong_passwords_are_limited_and_recorded(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        for _ in range(settings.sign_in_attempts):
            r = await sign_in(http, "marta", "not-the-password")
            assert r.status_code == 401 and "do not match" in r.text
            assert "clientela_session" not in r.headers.get("set-cookie", "")
        # The limit holds even for the right password, and says how long to wait.
        r = await sign_in(http, "marta")
        assert r.status_code == 429 and "Try again in 15 min" in r.text
        assert 0 < int(r.headers["retry-after"]) <= 900
        # An unknown user gets the same answer as a wrong password.
        r = await sign_in(http, "nobody", "whatever-it-is")
        assert r.status_code == 401 and "do not match" in r.text
        # Another user is not locked out by marta's attempts.
        r = await sign_in(http, "pablo")
        assert r.status_code == 303
    with session_scope(settings.db_url) as session:
        failed = audit.recent(session, subject="user:marta")
    assert [e.action for e in failed].count("session.sign_in_failed") == settings.sign_in_attempts


async def test_a_sign_in_form_from_elsewhere_is_refused(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        r = await http.post(
            "/console/sign-in", data={"csrf": "made-up", "username": "marta", "password": PASSWORD}
        )
        assert r.status_code == 403 and "expired" in r.text
        assert "clientela_session" not in r.headers.get("set-cookie", "")


async def test_sessions_end_when_idle_too_long_or_too_old_or_signed_out(
    client: Client, settings: Settings
) -> None:
    team(settings)

    def age(**ago: timedelta) -> None:
        with session_scope(settings.db_url) as session:
            for row in session.exec(select(ConsoleSession)).all():
                for column, delta in ago.items():
                    setattr(row, column, utcnow() - delta)
                session.add(row)

    async with browser(client, settings) as http:
        await sign_in(http, "marta")
        assert (await http.get("/console")).status_code == 200
        age(seen_at=settings.session_idle + timedelta(minutes=1))
        r = await http.get("/console")
        assert r.status_code == 303 and "/console/sign-in" in r.headers["location"]
        await sign_in(http, "marta")
        age(created_at=settings.session_max + timedelta(minutes=1), seen_at=timedelta(0))
        assert (await http.get("/console")).status_code == 303
        await sign_in(http, "marta")
        home = await http.get("/console")
        assert home.status_code == 200
        kept = http.cookies.get("clientela_session", path="/console")
        r = await http.post("/console/sign-out", data={"csrf": token_of(home.text)})
        assert r.status_code == 303
        # The old cookie, replayed, no longer signs anyone in.
        http.cookies.set("clientela_session", kept, path="/console")
        assert (await http.get("/console")).status_code == 303


async def test_a_disabled_user_is_signed_out_at_once(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        await sign_in(http, "marta")
        with session_scope(settings.db_url) as session:
            disable(session, actor="test", username="marta")
        assert (await http.get("/console")).status_code == 303
        assert (await sign_in(http, "marta")).status_code == 401


async def test_forms_need_the_session_token(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        home = await http.get("/console")
        await sign_in(http, "root")
        home = await http.get("/console/users")
        token = token_of(home.text)
        form = {"username": "eve", "password": "p" * 16, "role_admin": "1"}
        for bad in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
            r = await http.post("/console/users", data={**form, **bad})
            assert r.status_code == 403 and "did not come from the console" in r.text
        # htmx sends the token in a header instead.
        r = await http.post("/console/users", data=form, headers={"X-CSRF-Token": token})
        assert r.status_code == 303
    with session_scope(settings.db_url) as session:
        [added] = audit.recent(session, subject="user:eve")
    assert (added.actor, added.action) == ("user:root", "user.added")


async def test_roles_limit_pages_and_actions(client: Client, settings: Settings) -> None:
    team(settings)
    make_customer(settings.db_url, external_id="C1")
    async with browser(client, settings) as desk:
        await sign_in(desk, "pablo")
        token = token_of((await desk.get("/console")).text)
        assert (await desk.get("/console/customers/C1")).status_code == 200
        for path in (
            "/console/campaigns",
            "/console/campaigns/new",
            "/console/templates",
            "/console/users",
            "/console/audit",
        ):
            r = await desk.get(path)
            assert r.status_code == 403, path
        r = await desk.post("/console/campaigns", data={"csrf": token, "spec": "id: x"})
        assert r.status_code == 403 and "marketer" in r.text
        r = await desk.post("/console/rules/apply", data={"csrf": token, "source": "x: 1"})
        assert r.status_code == 403 and "admin" in r.text
    async with browser(client, settings) as marketer:
        await sign_in(marketer, "marta")
        token = token_of((await marketer.get("/console")).text)
        r = await marketer.post("/console/campaigns/x/decide/approve", data={"csrf": token})
        assert r.status_code == 403 and "approver" in r.text
        assert (await marketer.get("/console/desk")).status_code == 403


async def test_hostile_input_gets_a_clear_answer(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        # Somewhere to return to after sign-in is only ever a console page.
        for target in (
            "//evil.example/x",
            "https://evil.example",
            "/console/../x\\y",
            "/elsewhere",
        ):
            form = await http.get("/console/sign-in", params={"next": target})
            assert 'name="next" value="/console"' in form.text, target
        r = await http.get("/console/language/xx")
        assert r.status_code == 404
        await sign_in(http, "root")
        r = await http.get("/console/customers", params={"q": "a\x00\x1b[31m"})
        assert r.status_code == 200 and "\x1b" not in r.text
        assert (await http.get("/console/customers/bad%0aid")).status_code == 422
        r = await http.get("/console/campaigns", params={"page": "-1"})
        assert r.status_code == 422
        token = token_of((await http.get("/console/users")).text)
        r = await http.post(
            "/console/users",
            data={"csrf": token, "username": "x\r\nSet-Cookie: a=b", "password": "p" * 16},
        )
        assert r.status_code == 422 and "a username is" in r.text
        r = await http.post(
            "/console/users",
            content=b"\xff\xfe",
            headers={"content-type": "application/x-www-form-urlencoded", "x-csrf-token": token},
        )
        assert r.status_code == 400 and "could not be read" in r.text
        r = await http.post("/console/users", data={"csrf": token, "username": "a\x01b"})
        assert r.status_code == 400 and "not text" in r.text
        r = await http.post(
            "/console/rules/check",
            data={"csrf": token, "source": "x" * (settings.max_body_bytes + 1)},
        )
        assert r.status_code == 413
    # A forged session cookie is just no session.
    async with browser(client, settings) as forged:
        forged.cookies.set("clientela_session", "A" * 43, path="/console")
        r = await forged.get("/console")
        assert r.status_code == 303
        r = await forged.get("/console", headers={"HX-Request": "true"})
        assert r.status_code == 204 and r.headers["hx-redirect"].startswith("/console/sign-in")


async def test_the_console_speaks_the_users_language(client: Client, settings: Settings) -> None:
    team(settings)
    async with browser(client, settings) as http:
        r = await http.get("/console/sign-in", headers={"Accept-Language": "es-CL,es;q=0.9"})
        assert "Entrar en Clientela" in r.text and '<html lang="es">' in r.text
        await sign_in(http, "marta")
        r = await http.get("/console/language/es", params={"next": "/console/campaigns"})
        assert r.status_code == 303 and r.headers["location"] == "/console/campaigns"
        page = await http.get("/console/campaigns")
        assert "Nueva campaña" in page.text and "Campañas" in page.text
        await http.get("/console/language/en")
        assert "New campaign" in (await http.get("/console/campaigns")).text


async def test_an_admin_erases_a_customer_from_their_page(
    client: Client, settings: Settings
) -> None:
    team(settings)
    make_customer(settings.db_url, external_id="ERASE-ME")
    async with browser(client, settings) as http:
        await sign_in(http, "marta")
        page = await http.get("/console/customers/ERASE-ME")
        assert "Erase this customer" not in page.text  # a marketer has no such button
        r = await http.post("/console/customers/ERASE-ME/erase", data={"csrf": token_of(page.text)})
        assert r.status_code == 403
        await http.post("/console/sign-out", data={"csrf": token_of(page.text)})
        await sign_in(http, "root")
        page = await http.get("/console/customers/ERASE-ME")
        assert "Erase this customer" in page.text
        r = await http.post("/console/customers/ERASE-ME/erase", data={})
        assert r.status_code == 403  # no form token, nothing erased
        assert (await http.get("/console/customers/ERASE-ME")).status_code == 200
        r = await http.post("/console/customers/ERASE-ME/erase", data={"csrf": token_of(page.text)})
        assert (
            r.status_code == 303 and r.headers["location"] == "/console/customers?erased=ERASE-ME"
        )
        after = await http.get(r.headers["location"])
        assert "ERASE-ME was erased" in after.text
        assert (await http.get("/console/customers/ERASE-ME")).status_code == 404
    with session_scope(settings.db_url) as session:
        [event] = audit.recent(session, subject="customer:ERASE-ME")
    assert (event.actor, event.action) == ("user:root", "customer.erased")
