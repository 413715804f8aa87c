"""`clientela sms`: the development SMS sink's side of a conversation."""

from __future__ import annotations

import httpx
import typer

from commands.common import fail, out, settings

sms_app = typer.Typer(help="SMS in development: replies as a phone would send them.")


@sms_app.command("reply")
def sms_reply(
    sender: str = typer.Argument(help="The customer's number, E.164 (+34600111222)"),
    body: str = typer.Argument(help="What they reply: STOP, START, HELP, or any text"),
) -> None:
    """Reply to our SMS from SENDER, through the API's incoming-message webhook, exactly as
    Twilio delivers a reply (signed with the sink's token). Development stack only: against
    real Twilio, reply from a phone."""
    from clientela.devstack.sms_sink import simulate_reply

    s = settings()
    if not s.uses_sms_sink:
        raise fail("Twilio credentials are set: reply from a phone instead")
    try:
        status, text = simulate_reply(s, sender, body)
    except httpx.HTTPError as exc:
        raise fail(
            f"the API at {s.api_host}:{s.api_port} cannot be reached ({exc}); "
            "start the stack: clientela up"
        ) from None
    if status != 200:
        raise fail(f"the API answered {status}: {text[:300]}")
    answer = text.split("<Message>", 1)[1].split("</Message>", 1)[0] if "<Message>" in text else ""
    out.print(
        f"Delivered the reply from {sender}." + (f" Answer: {answer}" if answer else ""),
        highlight=False,
    )
