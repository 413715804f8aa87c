"""A conversion places an order: fulfilled once, confirmed to the customer, fed back."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from sqlmodel import select
from temporalio.client import Client

from activities.orders import OrderActivities
from api.app import create_app
from clientela.db import session_scope
from clientela.devstack.smtp_catcher import SmtpCatcher, read_outbox
from clientela.settings import Settings
from models import CustomerDecision, Order, Transaction
from tests.factories import make_customer
from tests.serving import api
from tests.test_rules_apply import apply_directly
from workflows.order import OrderFulfilment


@pytest.fixture
async def http(client: Client, settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with api(client, settings) as c:
        yield c


async def test_a_conversion_is_fulfilled_confirmed_and_fed_back(
    http: httpx.AsyncClient, client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    cid = make_customer(settings.db_url, locale="en", preferred_channel="email")
    apply_directly(settings.db_url)
    click = await http.post("/events", json={"type": "click", "customer_id": cid})
    assert click.status_code == 202 and click.json()["fulfilment"] is None  # no order
    r = await http.post(
        "/events",
        json={"type": "conversion", "customer_id": cid, "value": "40.00", "channel": "web"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    order_id = body["order"]
    assert body["fulfilment"].startswith(f"order-{order_id}-")
    result = await client.get_workflow_handle_for(OrderFulfilment.run, body["fulfilment"]).result()
    assert result.fulfilled.value == "40.00" and result.confirmation.state == "sent"
    [mail] = read_outbox(settings.outbox_dir)
    assert mail["subject"] == f"Your order {order_id} is confirmed"
    # Fulfilling again (a retried activity) records nothing more.
    again = OrderActivities(settings).fulfil(order_id)
    assert again.already
    with session_scope(settings.db_url) as session:
        order = session.get(Order, order_id)
        transactions = session.exec(select(Transaction)).all()
        decision = session.exec(select(CustomerDecision)).one()
    assert order is not None and order.state == "fulfilled"
    assert [t.amount for t in transactions] == [40] and order.transaction_id == transactions[0].id
    # What the customer did is in the rules' view of them now: two responses, one purchase.
    assert decision.features["responses_12m"] == 2
    assert decision.features["purchases_12m"] == 1


async def test_an_order_whose_fulfilment_never_started_is_resumed(
    client: Client, settings: Settings, worker: None, catcher: SmtpCatcher
) -> None:
    from datetime import UTC, datetime, timedelta
    from decimal import Decimal

    from api.sweep import resume_fulfilment
    from models import Customer

    cid = make_customer(settings.db_url, locale="en", preferred_channel="email")
    with session_scope(settings.db_url) as session:  # recorded, then the API stopped
        customer = session.exec(select(Customer).where(Customer.external_id == cid)).one()
        assert customer.id is not None
        session.add(
            Order(
                key="lost-1",
                customer_id=customer.id,
                value=Decimal("12.50"),
                created_at=datetime.now(UTC) - timedelta(minutes=5),
            )
        )
    app = create_app(settings, client)
    [started] = await resume_fulfilment(app)
    result = await client.get_workflow_handle_for(OrderFulfilment.run, started).result()
    assert result.fulfilled.value == "12.50" and not result.fulfilled.already
    assert await resume_fulfilment(app) == []  # fulfilled: nothing left to resume
