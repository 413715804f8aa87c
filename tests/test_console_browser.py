"""The console driven in a real browser (Playwright with Debian's chromium), as its people use
it: a marketer takes a campaign from a spec with a mistake to its report, an approver
approves it (the marketer may not approve their own), the desk answers and resolves a
complaint, a template is edited with its preview and sent as a test; role limits and the
form token hold. Every page visited is saved as a screenshot in ``.artifacts/screenshots``.

The API and the worker run as their own processes, as `clientela up` runs them.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from clientela import ROOT
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.people.users import add_user
from clientela.settings import Settings
from tests.conftest import free_port
from tests.processes import start_api, start_worker
from tests.test_campaign_workflow import SPEC, tiered_customers

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ROOT / ".artifacts" / "screenshots"
PASSWORD = "console-test-password"

expect.set_options(timeout=20_000)

# `make test` and .ci/run install Debian's chromium; elsewhere, without it, these are skipped
# (but never in CI, where a missing browser is a failure).
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists() and not os.environ.get("CI"),
    reason="Debian's chromium is not installed (make test installs it: apt-get install chromium)",
)


@dataclass
class Console:
    base: str
    settings: Settings
    catcher: SmtpCatcher


@pytest.fixture(scope="module")
def console(
    tmp_path_factory: pytest.TempPathFactory, temporal_env: WorkflowEnvironment
) -> Iterator[Console]:
    """The API with its console and a worker, each in its own process, on a fresh SQLite
    database with a team (marta: marketer and approver; ana: approver; pablo: desk) and
    twelve customers tiered by the shipped rules."""
    home = tmp_path_factory.mktemp("console") / "home"
    templates = home.parent / "templates"  # the test edits a template: never the shipped ones
    shutil.copytree(ROOT / "templates", templates)
    catcher = SmtpCatcher(home / "outbox", port=free_port()).start()
    settings = Settings(
        home=home,
        templates_dir=templates,
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"console-{uuid.uuid4()}",
        catcher_port=catcher.port,
        api_port=free_port(),
        sms_hours="00:00-24:00",
    )
    tiered_customers(settings.db_url, 12, locale="en")
    with session_scope(settings.db_url) as session:
        for username, roles in (
            ("marta", ["marketer", "approver"]),
            ("ana", ["approver"]),
            ("pablo", ["desk"]),
        ):
            add_user(
                session,
                actor="test",
                username=username,
                roles=roles,
                password=PASSWORD,
                name=username.title(),
                email=f"{username}@team.example",
            )
    worker = start_worker(settings, home / "worker.log")
    api, base = start_api(settings, home / "api.log")
    try:
        yield Console(base, settings, catcher)
    finally:
        for process in (api, worker):
            process.terminate()
            process.wait(10)
        catcher.stop()
    log = (home / "api.log").read_text()
    assert "Traceback" not in log, log


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    SHOTS.mkdir(parents=True, exist_ok=True)
    async with async_playwright() as p:
        chromium = await p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        await chromium.close()


async def signed_in(browser: Browser, console: Console, username: str) -> Page:
    """A new browser (its own cookies) with ``username`` signed in, on the home page."""
    context = await browser.new_context(
        base_url=console.base, viewport={"width": 1280, "height": 900}
    )
    context.set_default_timeout(20_000)
    page = await context.new_page()
    await page.goto("/console")
    await expect(page).to_have_url(re.compile(r"/console/sign-in"))
    await page.get_by_label("Username").fill(username)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", level=1)).to_contain_text(username.title())
    return page


async def shot(page: Page, name: str) -> None:
    await page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


async def test_a_campaign_from_a_new_spec_to_its_report(browser: Browser, console: Console) -> None:
    cid = f"spring-{uuid.uuid4().hex[:6]}"
    spec = SPEC.format(id=cid, budget=10).replace("response_window: 60", "response_window: 3600")
    marta = await signed_in(browser, console, "marta")
    await shot(marta, "home")
    await marta.get_by_role("link", name="Campaigns").first.click()
    await marta.get_by_role("link", name="New campaign").click()
    editor = marta.get_by_label("Spec (YAML)")
    # A mistake: a channel that does not exist, on line 7.
    await editor.fill(spec.replace("channel: email", "channel: fax"))
    problems = marta.locator(".problems")
    await expect(problems).to_contain_text("Line 7, column 10")
    await expect(problems).to_contain_text("channel")
    await expect(marta.locator("#gutter .bad-line")).to_have_text(["\u25b6 7\n"])
    await shot(marta, "campaign-new-with-error")
    await editor.fill(spec)
    await expect(marta.get_by_text("The spec is valid.")).to_be_visible()
    await marta.get_by_role("button", name="Preview the audience").click()
    await expect(marta.locator("#preview")).to_contain_text("12 customers in the audience")
    await shot(marta, "campaign-preview")
    await marta.get_by_role("button", name="Create the campaign").click()
    await expect(marta).to_have_url(re.compile(rf"/console/campaigns/{cid}$"))
    await expect(marta.locator("#h-status")).to_contain_text("awaiting approval")
    # Marta holds the approver role too, but she created it: four eyes.
    await marta.get_by_role("button", name="Approve").click()
    await expect(marta.get_by_role("alert")).to_contain_text("four eyes")
    await shot(marta, "campaign-own-approval-refused")

    ana = await signed_in(browser, console, "ana")
    await (
        ana.get_by_role("link", name="Awaiting approval")
        .or_(ana.get_by_role("link", name="Test campaign"))
        .first.click()
    )
    await expect(ana.locator("#h-status")).to_contain_text("awaiting approval")
    await shot(ana, "campaign-awaiting-approval")
    await ana.get_by_label("Note (optional)").fill("fine by me")
    await ana.get_by_role("button", name="Approve").click()
    await expect(ana.locator("#h-status")).to_contain_text("tracking responses", timeout=60_000)
    await expect(ana.get_by_text("Decided by")).to_be_visible()
    await shot(ana, "campaign-tracking")

    await marta.goto(f"/console/campaigns/{cid}")
    await expect(marta.locator("#h-status")).to_contain_text("tracking responses")
    await expect(marta.get_by_text(re.compile(r"\d+ of \d+ messages handled"))).to_be_visible()
    await marta.get_by_role("button", name="Close the response window").click()
    await expect(marta.locator("#h-status")).to_contain_text("done", timeout=60_000)
    await marta.get_by_role("link", name="Open the report").click()
    await expect(marta.get_by_role("heading", level=1)).to_have_text("Test campaign")
    assert await marta.locator("svg").count() >= 2  # the forest plot and a funnel at least
    await shot(marta, "campaign-report")
    csv = await marta.request.get(f"/console/campaigns/{cid}/report.csv")
    assert csv.ok and "arm" in (await csv.text()).splitlines()[0]
    trail = await marta.request.get(f"/console/campaigns/{cid}")
    text = await trail.text()
    assert "user:marta" in text and "user:ana" in text  # who created, who approved
    # The next campaign starts from this one's spec, under a new id.
    await marta.goto(f"/console/campaigns/{cid}")
    await marta.get_by_role("link", name="New campaign from this one").click()
    editor = marta.get_by_label("Spec (YAML)")
    await expect(editor).to_have_value(re.compile(rf"^id: {cid}-copy$", re.MULTILINE))
    await expect(marta.get_by_text("The spec is valid.")).to_be_visible()
    await marta.context.close()
    await ana.context.close()


async def test_the_desk_answers_and_resolves_a_complaint(
    browser: Browser, console: Console
) -> None:
    with session_scope(console.settings.db_url) as session:
        from sqlmodel import select

        from models import Customer

        customer = session.exec(select(Customer.external_id)).first()
    async with httpx.AsyncClient(base_url=console.base) as http:
        r = await http.post(
            "/events",
            json={
                "type": "complaint",
                "customer_id": customer,
                "code": "BILLING",
                "description": "Charged twice",
                "channel": "email",
            },
        )
        assert r.status_code == 202, r.text
        case_id = r.json()["complaint"]["id"]
    pablo = await signed_in(browser, console, "pablo")
    await pablo.get_by_role("link", name="Service desk").click()
    await pablo.get_by_role("link", name=re.compile(rf"#{case_id} BILLING")).click()
    await expect(pablo.locator("#case-state")).to_have_text("open")
    await shot(pablo, "desk-case-open")
    await pablo.get_by_label("What you told the customer").fill("Refund on its way")
    await pablo.get_by_role("button", name="Record the answer").click()
    await expect(pablo.locator("#case-state")).to_have_text("responded")
    await pablo.get_by_label("How it was resolved").fill("Refunded")
    await pablo.get_by_role("button", name="Resolve the case").click()
    await expect(pablo.locator("#case-state")).to_have_text("resolved")
    await expect(pablo.get_by_text("pablo: Refunded")).to_be_visible()
    await shot(pablo, "desk-case-resolved")
    # A desk user may not launch a campaign: no link, and the page itself refuses.
    await expect(pablo.get_by_role("link", name="Campaigns")).to_have_count(0)
    response = await pablo.goto("/console/campaigns/new")
    assert response is not None and response.status == 403
    await expect(pablo.get_by_role("alert")).to_contain_text("marketer")
    await shot(pablo, "refused-role")
    await pablo.context.close()


async def test_a_template_edit_shows_in_the_preview_and_goes_as_a_test(
    browser: Browser, console: Console
) -> None:
    marta = await signed_in(browser, console, "marta")
    await marta.get_by_role("link", name="Templates").click()
    await (
        marta.get_by_role("row", name=re.compile("^welcome"))
        .get_by_role("link", name="Edit")
        .first.click()
    )
    subject = marta.get_by_label(re.compile("^Email subject"))
    await expect(marta.locator("#preview-subject")).not_to_be_empty()
    await subject.fill("Hola {{ customer.first_name }}, bienvenida")
    await expect(marta.locator("#preview-subject")).to_contain_text(", bienvenida")
    await subject.fill("Hi {{ customer.no_such_field }}")
    await expect(marta.locator("#template-problems")).to_contain_text("no_such_field")
    await shot(marta, "template-error")
    await subject.fill("Welcome aboard, {{ customer.first_name }}")
    await expect(marta.locator("#preview-subject")).to_contain_text("Welcome aboard, ")
    await shot(marta, "template-preview")
    await marta.get_by_role("button", name="Send a test to me").click()
    await expect(marta.locator("#test-result")).to_contain_text("marta@team.example")
    sent = [m for m in read_outbox(console.settings.outbox_dir) if "marta@team.example" in m["to"]]
    assert [m["subject"] for m in sent][-1].startswith("[TEST] Welcome aboard, ")
    await marta.get_by_role("button", name="Save").click()
    await expect(marta.get_by_text("Saved.")).to_be_visible()
    saved = console.settings.templates_dir / "welcome" / "en" / "subject.txt"
    assert saved.read_text() == "Welcome aboard, {{ customer.first_name }}"
    await marta.context.close()


async def test_a_form_without_its_token_is_refused_and_changes_nothing(
    browser: Browser, console: Console
) -> None:
    marta = await signed_in(browser, console, "marta")
    before = (console.settings.templates_dir / "welcome" / "en" / "sms.txt").read_text()
    # The browser's own cookies, a form another site could post: no token, no change.
    r = await marta.request.post(
        "/console/templates/welcome/en", form={"sms.txt": "hijacked"}, max_redirects=0
    )
    assert r.status == 403 and "did not come from the console" in await r.text()
    r = await marta.request.post(
        "/console/templates/welcome/en",
        form={"sms.txt": "hijacked", "csrf": "forged"},
        max_redirects=0,
    )
    assert r.status == 403
    assert (console.settings.templates_dir / "welcome" / "en" / "sms.txt").read_text() == before
    # The same page in Spanish, by the user's choice.
    await marta.get_by_role("link", name="Español").click()
    await expect(marta.get_by_role("link", name="Campañas").first).to_be_visible()
    await shot(marta, "home-es")
    await marta.context.close()


async def test_every_page_opens_for_an_admin(browser: Browser, console: Console) -> None:
    """A smoke pass over the pages not driven above (and their screenshots)."""
    with session_scope(console.settings.db_url) as session:
        add_user(
            session,
            actor="test",
            username="root",
            roles=["admin", "desk", "marketer"],
            password=PASSWORD,
            name="Root",
        )
    root = await signed_in(browser, console, "root")
    for name, path in (
        ("customers", "/console/customers?q=a"),
        ("journeys", "/console/journeys"),
        ("journey-runs", "/console/journeys/runs"),
        ("rules", "/console/rules"),
        ("desk", "/console/desk?show=all"),
        ("service-report", "/console/desk/report"),
        ("users", "/console/users"),
        ("audit", "/console/audit"),
        ("templates", "/console/templates"),
        ("campaigns", "/console/campaigns"),
    ):
        response = await root.goto(path)
        assert response is not None and response.status == 200, (path, response)
        await shot(root, name)
    await root.goto("/console/customers?q=a")
    await root.locator("table a").first.click()
    await expect(root.get_by_role("heading", name="Timeline")).to_be_visible()
    await shot(root, "customer")
    await root.context.close()
    await asyncio.sleep(0)


async def test_without_a_mouse_and_at_200_percent_zoom(browser: Browser, console: Console) -> None:
    """Sign in and find a customer with the keyboard alone; at 200% zoom (a 1280-pixel
    laptop screen seen at twice the size) no page needs sideways scrolling."""
    context = await browser.new_context(
        base_url=console.base, viewport={"width": 640, "height": 450}, device_scale_factor=2
    )
    page = await context.new_page()
    await page.goto("/console/sign-in")
    await expect(page.get_by_label("Username")).to_be_focused()
    await page.keyboard.type("pablo")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("Pablo")
    await page.keyboard.press("Tab")
    await expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    for _ in range(12):  # along the menu to Customers
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.textContent") == "Customers":
            break
    await page.keyboard.press("Enter")
    await expect(page.get_by_label(re.compile("^Find a customer"))).to_be_focused()
    await page.keyboard.type("a")
    await page.keyboard.press("Enter")
    await expect(page.locator("table a").first).to_be_visible()
    for path in ("/console", "/console/desk", "/console/customers?q=a", "/console/journeys"):
        await page.goto(path)
        wide = await page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert wide <= 0, f"{path} scrolls sideways by {wide}px at 200%"
    await shot(page, "zoom-200-desk")
    await context.close()
