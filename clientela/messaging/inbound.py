"""SMS replies: the opt-out and opt-in keywords, HELP, and any other reply as a response.

The keyword sets are those carriers and Twilio use (case-insensitive, the whole message):
STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, REVOKE, OPTOUT withdraw SMS consent at once;
START, YES, UNSTOP restore it; HELP, INFO are answered with a help text in the customer's
language. Twilio's ``OptOutType`` (its own reading of the keyword) wins when present. Any
other reply is a response in the customer's history and reaches their journeys. Each
inbound message is handled once: its ``MessageSid`` is the history row's key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import delete
from sqlmodel import Session, col, select

from clientela.customers import realtime
from clientela.customers.records import record_interaction, set_consent, suppress
from models import Customer, Direction, Interaction, Suppression

STOP = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
START = {"START", "YES", "UNSTOP"}
HELP = {"HELP", "INFO"}
HELP_TEXT = {
    "en": "Clientela: reply STOP to receive no more messages, START to receive them again.",
    "es": "Clientela: responda STOP para no recibir más mensajes y START para volver a recibirlos.",
}
#: The reason a number is suppressed for when it is not a customer's.
KEYWORD_REASON = "replied STOP"


def keyword(body: str, opt_out_type: str = "") -> str | None:
    """``stop``, ``start``, ``help`` or None for an ordinary reply."""
    told = opt_out_type.strip().upper()
    if told in ("STOP", "START", "HELP"):
        return told.lower()
    word = re.sub(r"[\s.!]+$", "", body.strip()).upper()
    for name, words in (("stop", STOP), ("start", START), ("help", HELP)):
        if word in words:
            return name
    return None


@dataclass
class Handled:
    """What an inbound SMS did."""

    duplicate: bool = False
    customer_id: str | None = None
    keyword: str | None = None
    reply: str = ""  # the answer to send back (HELP), in the customer's language
    held: list[int] = field(default_factory=list)  # journey entries to start


def handle(
    session: Session, *, sid: str, sender: str, body: str, opt_out_type: str, locale: str
) -> tuple[Handled, realtime.Outcome | None]:
    """Apply one inbound SMS in the caller's transaction."""
    key = f"sms-in:{sid}"
    seen = session.exec(select(Interaction.id).where(Interaction.message_key == key)).first()
    if seen is not None:
        return Handled(duplicate=True), None
    kind = keyword(body, opt_out_type)
    customer = session.exec(
        select(Customer).where(Customer.phone == sender).order_by(col(Customer.id))
    ).first()
    done = Handled(keyword=kind, customer_id=customer.external_id if customer else None)
    if kind == "help":
        language = customer.locale if customer and customer.locale in HELP_TEXT else locale
        done.reply = HELP_TEXT.get(language, HELP_TEXT["en"])
    if customer is None or customer.id is None:
        # Not a customer's number: an opt-out still holds (and an opt-in lifts only that).
        if kind == "stop":
            suppress(session=session, channel="sms", address=sender, reason=KEYWORD_REASON)
        elif kind == "start":
            session.execute(
                delete(Suppression).where(
                    col(Suppression.channel) == "sms",
                    col(Suppression.address) == sender,
                    col(Suppression.reason) == KEYWORD_REASON,
                )
            )
        return done, None
    if kind is not None:
        if kind in ("stop", "start"):
            set_consent(
                session=session,
                customer_id=customer.id,
                channel="sms",
                granted=kind == "start",
                source=f"keyword {body.strip().upper()[:20] or kind}",
            )
        record_interaction(
            session=session,
            customer_id=customer.id,
            channel="sms",
            direction=Direction.inbound,
            kind="keyword",
            outcome=kind,
            message_key=key,
        )
        return done, None
    outcome, _order = realtime.response(
        session,
        customer_id=customer.external_id,
        kind="reply",
        channel="sms",
        journey=None,
        campaign=None,
        value=None,
        today=datetime.now(UTC).date(),
        message_key=key,
        detail={"text": body[:500]},
    )
    return done, outcome
