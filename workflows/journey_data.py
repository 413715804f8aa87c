"""What a journey's workflow takes and answers (``workflows.journey``).

A module of plain data, imported by the workflow through the sandbox (passed through):
Temporal's sandbox imports a workflow's modules again for every run, and defining a
dataclass compiles its methods; here that happens once per process. ``bench.welcome``
measured the three definitions at about a sixth of the worker's CPU per welcome journey.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from activities.contracts import MessageOutcome


@dataclass
class JourneyInput:
    name: str
    version: str
    definition: dict[str, Any]  # the JourneySpec as plain data
    customer_id: str
    entry: str  # what let the customer in: the key of the event, period or date
    trigger: dict[str, Any] = field(default_factory=dict)  # about the trigger, for templates
    time_scale: float = 1.0  # waits are multiplied by it (tests and demos shorten them)
    # The start set CustomerId, Journey and the first step's Stage (``router.start``): each
    # search attribute written is a visibility update on the server, so the run writes a step
    # only when it changes. Runs started before carry False and write them all, as they did.
    attributes_at_start: bool = False
    heartbeat_timeout_seconds: float = 30


@dataclass
class JourneyEvent:
    kind: str  # open, click, visit, reply, conversion, purchase, ...
    channel: str = ""


@dataclass
class JourneyStatus:
    name: str
    version: str
    customer_id: str
    step: str = ""
    done: bool = False
    exit_reason: str = ""
    events: list[str] = field(default_factory=list)
    trail: list[str] = field(default_factory=list)  # what each step did
    messages: list[MessageOutcome] = field(default_factory=list)
    waiting_until: str = ""
