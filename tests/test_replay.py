"""Saved histories replay against today's workflow code: a change that would break running
journeys fails here, before it reaches a worker."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize(
    ("name", "text"), [(p.stem, p.read_text()) for p in HISTORIES], ids=[p.stem for p in HISTORIES]
)
async def test_saved_history_replays(name: str, text: str) -> None:
    history = WorkflowHistory.from_json(name, text)
    await Replayer(workflows=WORKFLOWS).replay_workflow(history)


def test_there_are_histories_to_replay() -> None:
    assert {p.stem.rsplit("-", 1)[-1] for p in HISTORIES} >= {
        "responded",
        "silent",
        "done",
        "rated",
    }
    assert {p.stem.split("-v")[0] for p in HISTORIES} >= {
        "welcome",
        "journey-welcome",
        "campaign",
        "complaint",
        "rules-apply",
    }
