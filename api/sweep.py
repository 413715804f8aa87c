"""What the API does every minute: resume what a stopped process left, settle SMS deliveries."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from fastapi import FastAPI
from sqlmodel import col, select

from api.deps import client_of
from api.routes.webhooks import record_status
from clientela.db import session_scope
from clientela.journeys import router as journey_router
from clientela.journeys.runs import start_case, start_fulfilment
from clientela.messaging import bounces, delivery, engagement
from clientela.messaging.channels.sms import SmsTransport
from clientela.service import cases as complaints
from clientela.settings import Settings
from models import Order


async def sweep(app: FastAPI, every: float = 60.0) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            await resume_fulfilment(app)
            await resume_cases(app)
            await resume_journeys(app)
            await settle_deliveries(app)
            await forget_tracking(app)
            await read_bounces(app)
        except Exception as exc:  # a sweep that fails is tried again at the next tick
            logging.getLogger(__name__).warning(
                "sweep (orders, cases, journeys, deliveries) failed; again in %.0f s: %r",
                every,
                exc,
            )


async def read_bounces(app: FastAPI) -> int:
    """New messages of the bounce Maildir are applied (when it exists: the built-in catcher
    delivers there, or ``bounce_maildir`` names one)."""
    settings: Settings = app.state.settings
    folder = bounces.mailbox_dir(settings)
    if not (folder / "new").is_dir():
        return 0
    return len(await asyncio.to_thread(bounces.fetch, settings, folder))


async def forget_tracking(app: FastAPI) -> int:
    """Tracked clicks and opens older than ``tracking_retention`` days are deleted."""
    settings: Settings = app.state.settings

    def forget() -> int:
        with session_scope(settings.db_url) as session:
            return engagement.forget_old(session, settings)

    return await asyncio.to_thread(forget)


async def settle_deliveries(app: FastAPI) -> dict[str, int]:
    """Delivery reports kept until their message was recorded are applied; an SMS whose
    report never came (``delivery_report_wait``) is looked up with the provider."""
    settings: Settings = app.state.settings

    def kept_and_stale() -> tuple[int, list[tuple[int, str]]]:
        with session_scope(settings.db_url) as session:
            applied = delivery.apply_kept(session)
        with session_scope(settings.db_url) as session:
            return applied, delivery.stale_sms(session, settings.delivery_report_wait)

    applied, stale = await asyncio.to_thread(kept_and_stale)
    looked = settled = 0
    if stale:
        transport = SmsTransport(settings)
        try:
            for _, sid in stale:
                status, code = await transport.status(sid)
                looked += 1
                if status in delivery.DELIVERED | delivery.UNDELIVERED:
                    await asyncio.to_thread(record_status, settings, sid, status, code)
                    settled += 1
        finally:
            await transport.close()
    return {"applied": applied, "looked_up": looked, "settled": settled}


async def resume_journeys(app: FastAPI) -> list[journey_router.Entry]:
    """Journey entries held a minute ago or more and not started yet: started now (what
    was started already is refused by its workflow id)."""
    settings: Settings = app.state.settings
    held = await asyncio.to_thread(journey_router.waiting, settings, timedelta(minutes=1))
    if not held:
        return []
    return await journey_router.release(await client_of(app), settings, held)


async def resume_cases(app: FastAPI) -> list[str]:
    """Complaint cases recorded a minute ago or more that were never acknowledged: their
    workflow is started again (a no-op when it runs)."""
    settings: Settings = app.state.settings

    def read() -> list[tuple[int, str]]:
        with session_scope(settings.db_url) as session:
            return complaints.unstarted(session, timedelta(minutes=1))

    waiting = await asyncio.to_thread(read)
    if not waiting:
        return []
    client = await client_of(app)
    return [await start_case(client, settings, cid, uid) for cid, uid in waiting]


async def resume_fulfilment(app: FastAPI) -> list[str]:
    """Orders recorded a minute ago or more whose fulfilment has not finished are started
    again (the API may have stopped in between): starting a running one again is a no-op."""
    settings: Settings = app.state.settings
    waiting = await asyncio.to_thread(_requested_orders, settings)
    if not waiting:
        return []
    client = await client_of(app)
    return [await start_fulfilment(client, settings, oid, uid) for oid, uid in waiting]


def _requested_orders(settings: Settings) -> list[tuple[int, str]]:
    cutoff = datetime.now(UTC) - timedelta(minutes=1)
    with session_scope(settings.db_url) as session:
        return [
            (order_id, uid)
            for order_id, uid in session.exec(
                select(Order.id, Order.uid).where(
                    Order.state == "requested", col(Order.created_at) < cutoff
                )
            ).all()
            if order_id is not None
        ]
