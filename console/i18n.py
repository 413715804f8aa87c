"""The console in English and Spanish.

English strings are the message ids; ``locale/es.po`` holds the Spanish (read with Babel,
so translators work with the usual gettext tools: ``pybabel extract -F console/babel.cfg``).
``tests/test_console_i18n.py`` checks that every string the pages use is translated.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from babel.messages.pofile import read_po

LANGUAGES = {"en": "English", "es": "Español"}
LOCALE_DIR = Path(__file__).parent / "locale"

Gettext = Callable[..., str]


@cache
def catalog(lang: str) -> dict[str, str]:
    path = LOCALE_DIR / f"{lang}.po"
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        po = read_po(f, locale=lang)
    return {str(m.id): str(m.string) for m in po if m.id and m.string and not m.fuzzy}


def gettext(lang: str) -> Gettext:
    """``_("Hello %(name)s", name=...)`` in ``lang`` (the English text where untranslated)."""
    strings = catalog(lang)

    def _(message: str, **values: Any) -> str:
        message = WORDS.get(message, message)
        text = strings.get(message, message)
        return text % values if values else text

    return _


def choose(cookie: str | None, accept_language: str | None) -> str:
    """The user's choice (a cookie) first, then the browser's preference, then English."""
    if cookie in LANGUAGES:
        return cookie
    for part in (accept_language or "").split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"


def N_(message: str) -> str:
    """Marks a word the pages translate from data (a stage, a state, a role) for extraction."""
    return message


#: Words the pages show from data (a stage, a state, a role, an audit action), through
#: ``_(value)``: the value, and the words an English reader sees for it (translated in turn).
WORDS = {
    # campaign stages
    "created": N_("created"),
    "awaiting_approval": N_("awaiting approval"),
    "preparing": N_("preparing the audience"),
    "proof": N_("sending proofs"),
    "pilot": N_("pilot"),
    "pilot_review": N_("pilot to review"),
    "waiting": N_("waiting to start"),
    "sending": N_("sending"),
    "tracking": N_("tracking responses"),
    "reporting": N_("writing the report"),
    "done": N_("done"),
    "cancelled": N_("cancelled"),
    "rejected": N_("rejected"),
    # message states and channels
    "queued": N_("queued"),
    "claimed": N_("about to go"),
    "sent": N_("sent"),
    "delivered": N_("delivered"),
    "failed": N_("failed"),
    "suppressed": N_("not sent"),
    "deferred": N_("waiting for quiet hours"),
    "email": N_("email"),
    "sms": N_("SMS"),
    "preferred": N_("preferred channel"),
    # complaint states, steps and breaches
    "open": N_("open"),
    "responded": N_("responded"),
    "resolved": N_("resolved"),
    "closed": N_("closed"),
    "response": N_("response"),
    "resolution": N_("resolution"),
    "acknowledged": N_("acknowledged"),
    "reminded": N_("reminder sent"),
    "escalated": N_("escalated"),
    "rated": N_("rated"),
    "surveyed": N_("survey sent"),
    # roles
    "marketer": N_("marketer"),
    "approver": N_("approver"),
    "desk": N_("service desk"),
    "admin": N_("admin"),
    # the audit trail
    "campaign.created": N_("created the campaign"),
    "campaign.approved": N_("approved"),
    "campaign.rejected": N_("rejected"),
    "campaign.go": N_("went on after the pilot"),
    "campaign.pause": N_("paused"),
    "campaign.resume": N_("resumed"),
    "campaign.cancel": N_("cancelled"),
    "campaign.close": N_("closed the response window"),
    "complaint.responded": N_("answered the complaint"),
    "complaint.resolved": N_("resolved the complaint"),
    "complaint.rated": N_("rated"),
    "customer.exported": N_("exported the customer's data"),
    "journey.started": N_("started the journey"),
    "journey.changed": N_("journey file changed"),
    "customer.erased": N_("erased the customer"),
    "journey.cancelled": N_("cancelled the journey"),
    "rules.applied": N_("applied the rules"),
    "template.changed": N_("changed the template"),
    "template.test_sent": N_("sent a test"),
    "token.issued": N_("issued a token"),
    "token.revoked": N_("revoked a token"),
    "user.added": N_("added the user"),
    "user.disabled": N_("disabled the user"),
    "user.password_set": N_("set the password"),
    "user.roles_changed": N_("changed the roles"),
    "session.signed_in": N_("signed in"),
    "session.sign_in_failed": N_("failed to sign in"),
    # timeline, journeys, rules
    "message": N_("message"),
    "purchase": N_("purchase"),
    "complaint": N_("complaint"),
    "click": N_("click"),
    "email_open": N_("opened"),
    "machine_click": N_("link checked by a machine"),
    "machine_open": N_("opened by a machine"),
    "machine": N_("machine"),
    "bounce": N_("bounce"),
    "hard": N_("hard"),
    "soft": N_("soft"),
    "spam_complaint": N_("marked as spam"),
    "abuse": N_("abuse"),
    "bounced": N_("bounced"),
    "keyword": N_("keyword"),
    "topic": N_("topic"),
    "subscribed": N_("subscribed"),
    "unsubscribed": N_("unsubscribed"),
    "consent": N_("consent"),
    "granted": N_("granted"),
    "withdrawn": N_("withdrawn"),
    "visit": N_("visit"),
    "reply": N_("reply"),
    "conversion": N_("conversion"),
    "unsubscribe": N_("unsubscribe"),
    "send": N_("send"),
    "wait": N_("wait"),
    "wait for": N_("wait for"),
    "branch": N_("branch"),
    "exit": N_("exit"),
    "step": N_("step"),
    "running": N_("running"),
    "completed": N_("completed"),
    "terminated": N_("stopped"),
    "timed_out": N_("timed out"),
    "error": N_("error"),
    "warning": N_("warning"),
    "applying": N_("applying"),
    "finished": N_("finished"),
}


def messages() -> set[str]:
    """Every message id the console uses: in its pages, its code and its vocabulary."""
    from babel.messages.extract import extract_from_dir

    here = Path(__file__).parent
    found: set[str] = set()
    for method, pattern in (("jinja2", "**.html"), ("python", "**.py")):
        for _file, _line, message, _comments, _context in extract_from_dir(
            str(here),
            method_map=[(pattern, method)],
            options_map={pattern: {"extensions": "jinja2.ext.do"}},
            keywords={"_": None, "N_": None},
        ):
            if isinstance(message, str):
                found.add(message)
    return found
