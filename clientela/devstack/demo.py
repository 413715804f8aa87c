"""``clientela demo``: the main job on the embedded defaults, end to end on the real stack."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from temporalio.client import WorkflowExecutionStatus

from clientela import ROOT
from clientela.campaigns import lifecycle
from clientela.campaigns.report import build as report_data
from clientela.customers.records import import_customers
from clientela.db import session_scope
from clientela.devstack import stack
from clientela.devstack.sample import sample_rows, write_sample_csv
from clientela.devstack.smtp_catcher import read_outbox
from clientela.messaging.counts import said
from clientela.messaging.eligibility import Facts
from clientela.people import audit, users
from clientela.rules_apply import ApplyRunning, apply_progress, start_apply
from clientela.settings import Settings
from clientela.temporal import connect, root_cause
from clientela.timeutil import zone_of
from models import CampaignMember, Consent, Customer, Message
from rules.model import load

RULES = ROOT / "rules" / "crm.yaml"
DEMO_CAMPAIGN = ROOT / "campaigns" / "demo-offer.yaml"
DEMO_NEXT = ROOT / "campaigns" / "demo-next.yaml"
DEMO_MODEL = "demo-offer-uplift"
#: The demo's team: who signs in to the console, and with which roles.
DEMO_USERS = {
    "marta": ("Marta Ruiz", ["marketer"]),
    "ana": ("Ana Soto", ["approver"]),
    "pablo": ("Pablo Vega", ["desk"]),
    "admin": ("Administrator", ["admin", "marketer", "approver", "desk"]),
}


def demo_users(settings: Settings) -> str:
    """The demo's users (made on first use, given a new password on each demo); their
    password, also kept in <home>/demo/sign-in.txt (readable by this account only)."""
    password = secrets.token_urlsafe(12)
    with session_scope(settings.db_url) as session:
        for username, (name, roles) in DEMO_USERS.items():
            try:
                users.get_user(session, username)
            except users.UnknownUser:
                users.add_user(
                    session,
                    actor="cli:demo",
                    username=username,
                    roles=roles,
                    password=password,
                    name=name,
                    email=f"{username}@clientela.example",
                )
            else:
                users.set_password(session, actor="cli:demo", username=username, password=password)
    note = settings.home / "demo" / "sign-in.txt"
    note.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(note, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(f"{u}\t{password}\t{', '.join(r)}\n" for u, (_n, r) in DEMO_USERS.items()))
    return password


@dataclass
class DemoReport:
    customers_file: Path
    imported: int = 0
    rejected: int = 0
    signups: list[str] = field(default_factory=list)
    journeys_started: int = 0
    journeys_finished: int = 0
    responses: int = 0
    messages: Counter[tuple[str, str]] = field(default_factory=Counter)
    outbox_files: int = 0
    sms_stored: int = 0
    stack_started: bool = False
    tiers: dict[str, int] = field(default_factory=dict)
    rules_version: str = ""
    campaign: CampaignRun | None = None
    purchase_journeys: Counter[str] = field(default_factory=Counter)
    birthday: str = ""  # what the birthday greeting of one demo customer did
    complaints: list[str] = field(default_factory=list)  # how each demo complaint went
    service: dict[str, Any] = field(default_factory=dict)  # the service report after them
    password: str = ""  # the demo users' password for the console
    model: dict[str, Any] = field(default_factory=dict)  # the uplift model trained after it
    next_campaign: dict[str, Any] = field(default_factory=dict)  # its three-arm preview
    next_spec: Path | None = None


@dataclass
class CampaignRun:
    campaign_id: str
    spec_path: Path
    preview: dict[str, Any]
    stages: list[str] = field(default_factory=list)
    sent: int = 0
    proofs: dict[str, int] = field(default_factory=dict)
    pilot: str = ""
    responses: Counter[str] = field(default_factory=Counter)
    fulfilments: list[str] = field(default_factory=list)
    returned: Counter[str] = field(default_factory=Counter)  # bounces and complaints
    sms_replies: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)
    report_path: str = ""
    reported: dict[str, int] = field(default_factory=dict)


def run_demo(
    settings: Settings,
    *,
    customers: int,
    signups: int,
    follow_up_seconds: float,
    log: Callable[[str], None] = print,
) -> DemoReport:
    if not stack.is_up(settings):
        log("Starting the stack (Temporal, SMTP catcher, SMS sink, API, worker)...")
        # Journeys' waits shrink so that the welcome's two days last follow_up_seconds.
        os.environ.setdefault("CLIENTELA_JOURNEY_TIME_SCALE", repr(follow_up_seconds / 172800))
        stack.start_detached(settings)
        started = True
    else:
        log("The stack is already running; using it.")
        started = False

    run = datetime.now(UTC).strftime("%y%m%d%H%M%S")
    rows = sample_rows(customers, prefix=f"D{run}-", seed=int(run))
    _some_addresses_fail(rows)
    path = write_sample_csv(settings.home / "demo" / f"customers-{run}.csv", rows)
    report = DemoReport(customers_file=path, stack_started=started)
    report.password = demo_users(settings)
    with session_scope(settings.db_url) as session:
        result = import_customers(session=session, path=path)
    report.imported, report.rejected = result.imported, len(result.errors)
    log(f"Imported {result.imported} generated customers from {path}")
    report.tiers, report.rules_version = asyncio.run(_apply_rules(settings))
    log(
        f"Tiered the base with rules/crm.yaml (version {report.rules_version}): "
        + ", ".join(f"{t} {n}" for t, n in sorted(report.tiers.items()))
    )

    chosen = _sign_up_mix(settings, rows, signups, random.Random(run))
    api = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    with httpx.Client(base_url=api, timeout=30, headers=headers) as http:
        for row in chosen:
            body = {
                "type": "signup",
                "external_id": row["external_id"],
                "first_name": row["first_name"],
                "email_consent": row["email_consent"] == "true",
                "sms_consent": row["sms_consent"] == "true",
            }
            r = http.post("/events", json=body)
            r.raise_for_status()
            report.signups.append(row["external_id"])
            report.journeys_started += sum(j["started"] for j in r.json()["journeys"])
        log(f"Signed up {len(chosen)} customers through POST {api}/events")
        # A third of them respond to the welcome, which changes their follow-up.
        time.sleep(2)
        for cid in report.signups[::3]:
            r = http.post("/events", json={"type": "click", "customer_id": cid})
            report.responses += int(r.status_code == 202)
        # Three of them buy: a purchase starts the cross-sell journey, a move up a tier its own.
        for cid in report.signups[1::5][:3]:
            r = http.post(
                "/events",
                json={"type": "purchase", "customer_id": cid, "amount": "1500.00", "product": "tv"},
            )
            r.raise_for_status()
            for entry in r.json()["journeys"]:
                report.purchase_journeys[entry["journey"]] += int(entry["started"])
    log(f"{report.responses} of them clicked; waiting for the journeys to finish...")
    report.journeys_finished = asyncio.run(
        _wait_finished(settings, report.signups, within=follow_up_seconds + 60)
    )
    quiet = [r["external_id"] for r in rows if r["external_id"] not in report.signups]
    # The birthday goes to someone who may be greeted: an address and consent for email.
    greetable = [
        r["external_id"]
        for r in rows
        if r["external_id"] in set(quiet) and r.get("email") and r["email_consent"] == "true"
    ]
    if greetable:
        report.birthday = asyncio.run(_birthday(settings, greetable[0], run))
        log(f"Birthday: {report.birthday}")
    if len(quiet) >= 3:
        log("Two customers complain; one case is answered in time, one breaches its level...")
        report.complaints, report.service = asyncio.run(_complaints(settings, quiet[1:]))
        for line in report.complaints:
            log(f"  {line}")
    # Delivery reports for SMS arrive a moment after the send; give them a few seconds.
    deadline = time.monotonic() + 5
    while True:
        report.messages = _message_counts(settings, f"D{run}-")
        if report.messages[("sms", "sent")] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    report.campaign = asyncio.run(_run_campaign(settings, run, random.Random(run), log))
    report.model, report.next_spec, report.next_campaign = asyncio.run(
        _learn_and_choose(settings, run, log)
    )
    report.outbox_files = len(read_outbox(settings.outbox_dir))
    store = settings.sms_dir / "messages.jsonl"
    report.sms_stored = sum(1 for _ in store.open()) if store.is_file() else 0
    return report


def _message_counts(settings: Settings, key_part: str) -> Counter[tuple[str, str]]:
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Message.channel, Message.state).where(
                col(Message.journey) == "welcome", col(Message.key).contains(key_part)
            )
        ).all()
    return Counter((channel, state) for channel, state in rows)


def _sign_up_mix(
    settings: Settings, rows: list[dict[str, Any]], signups: int, rng: random.Random
) -> list[dict[str, Any]]:
    """A random draw in which about a third prefer SMS and may get it, so both channels show."""
    by_id = {r["external_id"]: r for r in rows}
    now = datetime.now(UTC)
    with session_scope(settings.db_url) as session:
        customers = session.exec(
            select(Customer).where(col(Customer.external_id).in_(list(by_id)))
        ).all()
        facts = Facts(session, customers, now)
        # Texting customers for whom it is daytime: at night their SMS would wait till 08:00.
        texting = [
            customer.external_id
            for customer in customers
            if customer.preferred_channel == "sms"
            and by_id[customer.external_id]["sms_consent"] == "true"
            and (allowed := facts.tier_channels(customer)) is not None
            and "sms" in allowed[1]
            and settings.quiet_hours.next_opening(now, zone_of(customer.timezone)) is None
        ]
    picked = rng.sample(texting, min(len(texting), signups // 3))
    rest = [r["external_id"] for r in rows if r["external_id"] not in picked]
    picked += rng.sample(rest, min(len(rest), signups - len(picked)))
    return [by_id[cid] for cid in picked]


async def _apply_rules(settings: Settings) -> tuple[dict[str, int], str]:
    """Run `rules apply` with the shipped rule file and wait for it."""
    rules = load(RULES)
    client = await connect(settings)
    # Someone else's apply of the same rule set may be running: then wait for that one.
    with contextlib.suppress(ApplyRunning):
        await start_apply(client, settings, rules, started_by="demo")
    while True:
        progress, finished = await apply_progress(client, rules.name)
        if finished:
            return progress.tiers, progress.version
        await asyncio.sleep(0.5)


async def _wait_finished(settings: Settings, customer_ids: list[str], within: float) -> int:
    client = await connect(settings)
    deadline = time.monotonic() + within
    done: set[str] = set()
    while time.monotonic() < deadline:
        for cid in customer_ids:
            if cid in done:
                continue
            desc = await client.get_workflow_handle(f"journey-welcome-{cid}").describe()
            if desc.status != WorkflowExecutionStatus.RUNNING:
                done.add(cid)
        if len(done) == len(customer_ids):
            break
        await asyncio.sleep(1)
    return len(done)


#: What the demo's recipients do with the campaign's email, as Clientela itself sees it
#: through its tracked links and open pixel. Machines come first, as the message arrives: a
#: mail security gateway checks the links of some messages, Apple Mail's privacy proxy
#: fetches the images of others. People read later: some open, and of those some click.
GATEWAY, APPLE, OPENS, CLICKS_OF_OPENS = 0.10, 0.25, 0.40, 0.375
SCANNER_AGENT = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
APPLE_PROXY_AGENT = "Mozilla/5.0"
BROWSER_AGENT = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.5 Safari/605.1.15"
)
#: Purchases and visits the web shop reports through POST /events, per group, besides the
#: visits that come from clicks: the treated buy more than the control group (who get no
#: message); the report measures by how much.
TREATED_RESPONSES = [("visit", "web", 0.06), ("conversion", "web", 0.09)]
CONTROL_RESPONSES = [("visit", "web", 0.06), ("conversion", "web", 0.03)]
#: The offer is a plan that fits: it moves those who pay well above their plan most.
FITS_THE_OFFER = 0.3  # excess_ratio above this
TREATED_CONVERSION_IF_IT_FITS = 0.2
TREATED_CONVERSION_OTHERWISE = 0.05


def _some_addresses_fail(rows: list[dict[str, str]]) -> None:
    """A real base holds dead addresses: 4 in 300 of the generated ones are the built-in
    catcher's simulated mailboxes, whose servers answer as real ones do (a hard bounce, a
    full mailbox, a spam complaint)."""
    for n, row in enumerate(rows):
        if not row.get("email"):
            continue
        who = {7: "bounce", 57: "bounce", 123: "softbounce", 241: "complaint"}.get(n % 300)
        if who:
            row["email"] = f"{who}+{row['external_id'].lower()}@example.com"


async def _run_campaign(
    settings: Settings, run: str, rng: random.Random, log: Callable[[str], None]
) -> CampaignRun:
    """The demo campaign (campaigns/demo-offer.yaml) from approval to its report."""
    spec = yaml.safe_load(DEMO_CAMPAIGN.read_text(encoding="utf-8"))
    spec["id"] = f"demo-offer-{run}"
    path = settings.home / "demo" / f"campaign-{run}.yaml"
    path.write_text(
        f"# Made by `clientela demo` from {DEMO_CAMPAIGN.relative_to(ROOT)}\n"
        + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    client = await connect(settings)
    preview, handle = await lifecycle.create(client, settings, path, load(RULES))
    out = CampaignRun(spec["id"], path, preview.as_dict())
    log(
        f"Campaign {out.campaign_id}: {preview.audience} in the audience, "
        f"{preview.treated} to contact, {preview.control} held out, "
        f"{preview.excluded_total} excluded; estimated cost {preview.cost:.2f} "
        f"of {preview.budget:.2f}"
    )
    audit.record_now(
        settings.db_url,
        actor="user:marta",
        action="campaign.created",
        subject=f"campaign:{out.campaign_id}",
        detail={"by": "marta", "audience": preview.audience},
    )
    await lifecycle.decide(client, out.campaign_id, "approve", by="ana")
    audit.record_now(
        settings.db_url,
        actor="user:ana",
        action="campaign.approved",
        subject=f"campaign:{out.campaign_id}",
        detail={"by": "ana"},
    )
    log("  created by marta, approved by ana (four eyes); proofs, pilot and sending follow")
    while True:
        status = await lifecycle.status(client, out.campaign_id)
        if not out.stages or out.stages[-1] != status.stage:
            out.stages.append(status.stage)
            if status.pilot_check is not None and not out.pilot:
                check = status.pilot_check
                out.pilot = (
                    f"pilot of {status.pilot}: {check.failed} of {check.handed} failed, "
                    + ("go" if check.passed else "stopped for a decision")
                )
                log(f"  {out.pilot}")
            log(f"  stage: {status.stage}")
        if status.stage == "pilot_review":  # the demo decides as a marketer would
            await lifecycle.decide(client, out.campaign_id, "go", by="ana")
        if status.stage in ("tracking", "cancelled", "done"):
            break
        await asyncio.sleep(0.3)
    out.sent, out.proofs = status.sent, status.proofs
    log(
        f"  {status.sent} of {status.treated} handled: {said(status.counts)}; "
        "now the recipients' side..."
    )
    out.returned = await asyncio.to_thread(_returned, settings, out.campaign_id)
    log(f"  came back to the bounce address: {said(out.returned) or 'nothing'}")
    out.responses, out.fulfilments = await _respond(settings, out.campaign_id, rng)
    out.sms_replies = await asyncio.to_thread(_sms_replies, settings, out.campaign_id)
    for line in out.sms_replies:
        log(f"  {line}")
    await lifecycle.control(client, out.campaign_id, "close")
    final = await handle.result()
    out.report_path, out.reported = final.report_path, final.reported
    with session_scope(settings.db_url) as session:
        out.report = report_data(session, out.campaign_id)
    return out


def _returned(settings: Settings, campaign_id: str) -> Counter[str]:
    """Bounces and complaints for the campaign's messages, applied from the bounce mailbox
    (where the catcher, as the recipients' servers, delivered them) as the API's sweep does
    every minute; counted from the customers' histories, whoever applied them."""
    from clientela.messaging import bounces
    from models import Interaction

    bounces.fetch(settings)
    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Interaction.kind, Interaction.outcome).where(
                Interaction.campaign == campaign_id,
                col(Interaction.kind).in_(("bounce", "spam_complaint")),
            )
        ).all()
    names = {("bounce", "hard"): "hard bounces", ("bounce", "soft"): "soft bounces"}
    return Counter(names.get((k, o), "spam complaints") for k, o in rows)


def _tracked(settings: Settings, provider_ids: dict[str, str]) -> dict[str, tuple[str, str]]:
    """(tracked link or "", open pixel) of each email in the outbox, by ledger key."""
    import email as mail
    import email.policy
    import re

    by_id = {e["message_id"]: e["file"] for e in read_outbox(settings.outbox_dir)}
    out = {}
    for key, provider_id in provider_ids.items():
        name = by_id.get(provider_id.split(" ")[0])
        if name is None:
            continue
        parsed = mail.message_from_bytes(
            (settings.outbox_dir / name).read_bytes(), policy=email.policy.default
        )
        body = parsed.get_body(("html",))
        html = body.get_content() if body is not None else ""
        links = re.findall(r'href="([^"]+/c/[^"]+)"', html)
        pixels = re.findall(r'<img src="([^"]+/o/[^"]+)"', html)
        if pixels:
            out[key] = (links[0] if links else "", pixels[0])
    return out


async def _respond(
    settings: Settings, campaign_id: str, rng: random.Random
) -> tuple[Counter[str], list[str]]:
    """The recipients' side: machines and people open and click the emails (Clientela
    records it through its tracked links and pixel), and the web shop posts purchases."""
    with session_scope(settings.db_url) as session:
        members = session.execute(
            sa_select(
                col(Customer.external_id),
                col(CampaignMember.group),
                col(Message.key),
                col(Message.channel),
                col(Message.state),
                col(Message.provider_id),
                col(Message.sent_at),
            )
            .join(CampaignMember, col(CampaignMember.customer_id) == col(Customer.id))
            .outerjoin(
                Message,
                (col(Message.customer_id) == col(Customer.id))
                & (col(Message.campaign) == campaign_id)
                & col(Message.key).like("%:message"),
            )
            .where(
                col(CampaignMember.campaign_id) == campaign_id,
                col(CampaignMember.excluded) == "",
            )
        ).all()
    emailed = {
        key: provider_id
        for _, group, key, channel, state, provider_id, _ in members
        if group == "treated" and channel == "email" and state in ("sent", "delivered")
    }
    tracked = await asyncio.to_thread(_tracked, settings, emailed)
    who = {key: customer_id for customer_id, _, key, *_ in members if key}
    counts: Counter[str] = Counter()
    fulfilments = []
    api = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as http:

        async def hit(url: str, agent: str, method: str = "GET") -> None:
            r = await http.request(method, url, headers={"User-Agent": agent})
            if r.status_code not in (200, 302):
                raise RuntimeError(f"{url} answered {r.status_code}")

        plans = {key: (rng.random(), rng.random(), rng.random(), rng.random()) for key in tracked}
        # As the messages arrive: gateways check links, Apple's proxy fetches images.
        for key, (link, pixel) in tracked.items():
            gateway, apple, _, _ = plans[key]
            if link and gateway < GATEWAY:
                await hit(link, SCANNER_AGENT, "HEAD")
                await hit(link, SCANNER_AGENT)
                counts["treated link checks by a security gateway"] += 1
            if apple < APPLE:
                await hit(pixel, APPLE_PROXY_AGENT)
                counts["treated opens by Apple's privacy proxy"] += 1
        # People read their mail a little later than machines do.
        sent = [at for *_, at in members if at is not None]
        if sent:
            last = max(sent).replace(tzinfo=UTC) if max(sent).tzinfo is None else max(sent)
            ready = last.timestamp() + settings.tracking_scanner_seconds + 1
            await asyncio.sleep(max(0.0, ready - time.time()))
        for key, (link, pixel) in tracked.items():
            _, _, opens, clicks = plans[key]
            if opens < OPENS:
                await hit(pixel, BROWSER_AGENT)
                counts["treated opens"] += 1
                if link and clicks < CLICKS_OF_OPENS:
                    await hit(link, BROWSER_AGENT)
                    counts["treated clicks"] += 1
                    # The click lands on the shop, whose site reports the visit as it
                    # reports every visit: the outcome a held-out customer can show too.
                    r = await http.post("/events", json={
                        "type": "visit", "customer_id": who[key], "campaign": campaign_id,
                        "channel": "web",
                    })  # fmt: skip
                    r.raise_for_status()
                    counts["treated visits from a click, posted by the shop"] += 1
        fits = await asyncio.to_thread(_fits_the_offer, settings, campaign_id)
        for customer_id, group, *_ in members:
            plan = TREATED_RESPONSES if group == "treated" else CONTROL_RESPONSES
            for kind, channel, chance in plan:
                if group == "treated" and kind == "conversion":
                    chance = (
                        TREATED_CONVERSION_IF_IT_FITS
                        if customer_id in fits
                        else TREATED_CONVERSION_OTHERWISE
                    )
                if rng.random() >= chance:
                    continue
                body: dict[str, Any] = {
                    "type": kind,
                    "customer_id": customer_id,
                    "campaign": campaign_id,
                    "channel": channel,
                }
                if kind == "conversion":
                    body["value"] = f"{rng.uniform(20, 90):.2f}"
                r = await http.post("/events", json=body)
                r.raise_for_status()
                counts[f"{group} {kind}s posted by the shop"] += 1
                if r.json().get("fulfilment"):
                    fulfilments.append(r.json()["fulfilment"])
    return counts, fulfilments


def _fits_the_offer(settings: Settings, campaign_id: str) -> set[str]:
    """The members who pay well above their plan (whom the offer suits)."""
    from models import CustomerDecision

    with session_scope(settings.db_url) as session:
        rows = session.exec(
            select(Customer.external_id, CustomerDecision.features)
            .join(CampaignMember, col(CampaignMember.customer_id) == col(Customer.id))
            .join(CustomerDecision, col(CustomerDecision.customer_id) == col(Customer.id))
            .where(CampaignMember.campaign_id == campaign_id)
        ).all()
    return {
        external_id
        for external_id, features in rows
        if isinstance(features.get("excess_ratio"), int | float)
        and features["excess_ratio"] > FITS_THE_OFFER
    }


async def _learn_and_choose(
    settings: Settings, run: str, log: Callable[[str], None]
) -> tuple[dict[str, Any], Path | None, dict[str, Any]]:
    """After the campaign: train the uplift model on what it recorded (as `clientela models
    train` does, a workflow), then preview the next campaign, whose arms a model, marketing's
    rule and chance choose."""
    from temporalio.client import WorkflowFailureError
    from temporalio.common import WorkflowIDReusePolicy

    from activities.models import TrainInput
    from workflows.models import ModelTraining, workflow_id

    client = await connect(settings)
    try:
        result = await client.execute_workflow(
            ModelTraining.run,
            TrainInput(name=DEMO_MODEL, requested_by="demo"),
            id=workflow_id(DEMO_MODEL),
            task_queue=settings.task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
    except WorkflowFailureError as exc:
        log(f"Model {DEMO_MODEL} was not trained: {root_cause(exc)}")
        return {}, None, {}
    model = result.summary
    m, rows = model["metrics"], model["rows"]
    log(
        f"Trained model {DEMO_MODEL} version {model['version']} on {rows['learn']} members of "
        f"{', '.join(model['campaigns'])}; on {rows['holdout']} it had not seen, its top 30% "
        f"converted {_pp(m.get('uplift_at_30'))} more when contacted (everyone: "
        f"{_pp(m.get('uplift_overall'))}), Qini {m.get('qini') or 0:.3f}"
    )
    spec = yaml.safe_load(DEMO_NEXT.read_text(encoding="utf-8"))
    spec["id"] = f"demo-next-{run}"
    path = settings.home / "demo" / f"next-{run}.yaml"
    path.write_text(
        f"# Made by `clientela demo` from {DEMO_NEXT.relative_to(ROOT)}\n"
        + yaml.safe_dump(spec, sort_keys=False, allow_unicode=True),
        encoding="utf-8",
    )
    preview = await asyncio.to_thread(
        lifecycle.preview_source, settings, path.read_text(encoding="utf-8"), str(path), load(RULES)
    )
    return model, path, preview.as_dict()


def _pp(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.1f} pp"


def _sms_replies(settings: Settings, campaign_id: str) -> list[str]:
    """Two customers reply to the campaign's SMS from their phones (through the sink, as
    Twilio delivers replies): one STOP, one a question."""
    from clientela.customers.records import consents
    from clientela.devstack.sms_sink import simulate_reply

    with session_scope(settings.db_url) as session:
        texted = session.exec(
            select(Customer)
            .join(Message, col(Message.customer_id) == col(Customer.id))
            .where(
                Message.campaign == campaign_id,
                Message.channel == "sms",
                col(Message.state).in_(("sent", "delivered", "queued")),
            )
            .order_by(col(Message.id))
            .limit(2)
        ).all()
        if len(texted) < 2:  # none texted by the campaign: customers we text, replying to us
            texted = session.exec(
                select(Customer)
                .join(CampaignMember, col(CampaignMember.customer_id) == col(Customer.id))
                .join(Consent, col(Consent.customer_id) == col(Customer.id))
                .where(
                    CampaignMember.campaign_id == campaign_id,
                    col(Customer.phone).is_not(None),
                    Consent.channel == "sms",
                    col(Consent.granted).is_(True),
                )
                .order_by(col(Customer.id))
                .limit(2)
            ).all()
        phones = [(c.external_id, c.phone or "", c.id) for c in texted]
    lines = []
    for (cid, phone, pk), body in zip(phones, ("STOP", "Is this for my line too?"), strict=False):
        status, _ = simulate_reply(settings, phone, body)
        with session_scope(settings.db_url) as session:
            held = consents(session=session, customer_id=pk or 0).get("sms")
        if body == "STOP":
            lines.append(
                f"{cid} texted STOP to our number: SMS consent "
                + ("withdrawn" if held is not None and not held.granted else "NOT withdrawn")
                + f" at once ({held.source if held else 'no record'})"
            )
        else:
            lines.append(f"{cid} texted {body!r}: recorded as a response (HTTP {status})")
    return lines


async def _birthday(settings: Settings, customer_id: str, run: str) -> str:
    """Make today one customer's birthday and run the hourly date journeys for the hour in
    which they are greeted (09:00 where they live), as the schedule will."""
    from datetime import date, time

    from clientela.timeutil import zone_of
    from workflows.dates import DateJourneys
    from workflows.journey import JourneyStatus, JourneyWorkflow

    with session_scope(settings.db_url) as session:
        customer = session.exec(select(Customer).where(Customer.external_id == customer_id)).one()
        zone = zone_of(customer.timezone)
        today = datetime.now(UTC).astimezone(zone).date()
        # Today's month and day (a leap year, so that 29 February is a birthday too).
        customer.birthday = date(1992, today.month, today.day)
        session.add(customer)
    slot = datetime.combine(today, time(settings.date_hour), tzinfo=zone).astimezone(UTC)
    client = await connect(settings)
    counts = await client.execute_workflow(
        DateJourneys.run,
        slot.isoformat(),
        id=f"demo-dates-{run}",
        task_queue=settings.task_queue,
    )
    wid = f"journey-birthday-{customer_id}-{today.year}"
    try:
        result: JourneyStatus = await asyncio.wait_for(
            client.get_workflow_handle_for(JourneyWorkflow.run, wid).result(), timeout=60
        )
    except TimeoutError:
        # Still running: most likely its message waits for the customer's quiet hours.
        handle = client.get_workflow_handle_for(JourneyWorkflow.run, wid)
        status: JourneyStatus = await handle.query(JourneyWorkflow.status)
        if status.waiting_until:
            said_ = status.trail[-1] if status.trail else f"waits until {status.waiting_until}"
            return (
                f"{customer_id}: {wid} is running ({said_}); follow it with "
                f"`clientela journey status birthday {customer_id}`"
            )
        return f"{customer_id}: {wid} is still at step {status.step!r} after a minute"
    except Exception as exc:  # shown as it is: the demo reports, it does not hide
        return f"{customer_id}: {wid} did not finish ({exc!r}); date run {counts}"
    message = result.messages[0] if result.messages else None
    how = f"{message.state} on {message.channel or '-'}" if message else "nothing sent"
    if message and message.reason:
        how += f" ({message.reason})"
    return f"{customer_id} greeted at 09:00 {zone.key} by {wid}: {how}"


async def _complaints(
    settings: Settings, candidates: list[str]
) -> tuple[list[str], dict[str, Any]]:
    """Two complaints through the API, as the service desk and the customers handle them.

    The first is answered and resolved at once; the second, from the most valuable customer
    at hand, is left until its service level is breached and escalated, then resolved. Both
    customers answer the satisfaction survey through its link. The service levels run at the
    stack's time scale (the demo's own stack shrinks the tier's hours to seconds)."""
    from clientela.messaging.links import survey_url
    from clientela.service import report as service_report
    from models import Complaint

    with session_scope(settings.db_url) as session:
        tiers = dict(
            session.exec(
                select(Customer.external_id, Customer.tier).where(
                    col(Customer.external_id).in_(candidates)
                )
            ).all()
        )
    ranked = sorted(candidates, key=lambda c: tiers.get(c) or "Z")
    late = ranked[0]  # the most valuable customer at hand: the shortest service level
    prompt = next((c for c in ranked if tiers.get(c) != tiers.get(late)), ranked[1])
    api = f"http://{settings.api_host}:{settings.api_port}"
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    lines = []
    async with httpx.AsyncClient(base_url=api, timeout=30, headers=headers) as http:
        cases = {}
        for cid, code, text in [
            (prompt, "DELIVERY-02", "the parcel did not arrive"),
            (late, "BILLING-01", "charged twice this month"),
        ]:
            r = await http.post(
                "/events",
                json={
                    "type": "complaint",
                    "customer_id": cid,
                    "code": code,
                    "description": text,
                    "channel": "email",
                },
            )
            r.raise_for_status()
            cases[cid] = r.json()["complaint"]
        first = cases[prompt]["id"]
        for step, body in [
            ("response", {"by": "demo desk", "note": "called the customer"}),
            ("resolution", {"by": "demo desk", "resolution": "sent the parcel again"}),
        ]:
            (await http.post(f"/complaints/{first}/{step}", json=body)).raise_for_status()
        second = cases[late]["id"]
        case = await _case_until(http, second, lambda c: c["escalated_at"], within=45)
        if not case["escalated_at"]:
            lines.append(
                f"complaint {second} not escalated within 45 s: this stack runs service levels "
                f"in real time (response due {case['due_at']})"
            )
        body = {"by": "service lead", "resolution": "refunded the double charge"}
        (await http.post(f"/complaints/{second}/resolution", json=body)).raise_for_status()
        for complaint_id, score in [(first, 5), (second, 2)]:
            case = await _case_until(http, complaint_id, lambda c: "surveyed" in c["steps"], 30)
            uid = case["workflow_id"].rsplit("-", 1)[1]
            link = survey_url(settings, complaint_id, uid).removeprefix(settings.recipient_base_url)
            r = await http.post(
                link,
                content=f"score={score}",
                headers={"content-type": "application/x-www-form-urlencoded"},
            )
            r.raise_for_status()
        for complaint_id in (first, second):
            case = await _case_until(http, complaint_id, lambda c: c["state"] == "closed", 30)
            steps = " > ".join(sorted(case["steps"], key=lambda s: case["steps"][s]["at"]))
            lines.append(
                f"#{complaint_id} {case['code']}, tier {case['tier'] or '-'}: {steps}; "
                f"breached: {', '.join(case['breached']) or 'nothing'}; "
                f"scored {case['satisfaction']}/5"
            )
    with session_scope(settings.db_url) as session:
        opened = session.exec(select(Complaint.opened_at).where(Complaint.id == first)).one()
        data = service_report.build(session, since=opened)
    return lines, data


async def _case_until(
    http: httpx.AsyncClient, complaint_id: int, done: Callable[[dict[str, Any]], Any], within: float
) -> dict[str, Any]:
    """The case once ``done(case)`` holds, or as it is after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        r = await http.get(f"/complaints/{complaint_id}")
        r.raise_for_status()
        case: dict[str, Any] = r.json()
        if done(case) or time.monotonic() > deadline:
            return case
        await asyncio.sleep(0.3)
