"""The ``clientela`` command line: the command groups of ``commands/``, assembled."""

from __future__ import annotations

import os
import sys

import typer
from rich.text import Text

from commands import (
    bounces,
    campaigns,
    complaints,
    customers,
    db,
    events,
    journeys,
    models,
    rules,
    serve,
    service,
    sms,
    stack,
    users,
)
from commands.common import err

app = typer.Typer(help="Clientela: CRM rules, campaigns and journeys.", no_args_is_help=True)
app.registered_commands.extend(stack.app.registered_commands)  # up, down, worker, demo
app.add_typer(campaigns.campaign_app, name="campaign")
app.add_typer(events.events_app, name="events")
app.add_typer(customers.customers_app, name="customers")
app.add_typer(journeys.journey_app, name="journey")
app.add_typer(rules.rules_app, name="rules")
app.add_typer(models.models_app, name="models")
app.add_typer(serve.serve_app, name="serve")
app.add_typer(db.db_app, name="db")
app.add_typer(complaints.complaint_app, name="complaint")
app.add_typer(service.service_app, name="service")
app.add_typer(users.users_app, name="users")
app.add_typer(users.audit_app, name="audit")
app.add_typer(sms.sms_app, name="sms")
app.add_typer(bounces.bounces_app, name="bounces")


def main() -> None:
    from clientela.db import SchemaOutdated

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except SchemaOutdated as exc:
        err.print(Text.assemble(("error:", "red"), " ", str(exc)), soft_wrap=True)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    # The Temporal client's Rust threads can abort CPython's finalisation with "PyGILState_
    # Release: thread state must be current" (temporalio/sdk-python#300). Everything is
    # flushed and closed by now, so skip the interpreter's teardown.
    os._exit(code)


if __name__ == "__main__":
    main()
