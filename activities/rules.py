"""Activities of ``rules apply``: rank the base, decide page by page, close the run."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlmodel import Session, col, func, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from clientela.db import session_scope
from clientela.settings import Settings
from models import Customer, RuleRun, RuleVersion
from rules import service
from rules.data import slice_bounds


@dataclass
class PrepareInput:
    digest: str
    today: str  # ISO date: the workflow's, so a retried activity sees the same day
    slices: int = 1  # the base cut into this many runs of ids, decided in parallel
    # False: leave the rankings to ``rules_rank_pages`` over the slices, then
    # ``rules_thresholds`` (True: rank the whole base here, as runs started before did).
    rank: bool = True


@dataclass
class PrepareResult:
    run_id: int
    total: int
    thresholds: dict[str, float | int | None] = field(default_factory=dict)
    bounds: list[int] = field(default_factory=list)  # where each slice starts (after)
    rankings: int = 0  # how many rankings the rules have (to compute over the slices)


@dataclass
class ApplyPagesInput:
    run_id: int
    after_id: int
    today: str
    page_size: int = 1000
    pages: int = 5
    until_id: int | None = None  # the end of this slice of the base (inclusive)


@dataclass
class ApplyPagesResult:
    last_id: int
    processed: int = 0
    changed: int = 0
    tiers: dict[str, int] = field(default_factory=dict)
    done: bool = False


@dataclass
class FinishInput:
    run_id: int
    counts: dict[str, int] = field(default_factory=dict)


log = logging.getLogger(__name__)
_ENGINE = threading.Lock()


def rules_queue(task_queue: str) -> str:
    """The task queue of ``rules_apply_pages``: one at a time per worker process."""
    return f"{task_queue}-rules"


class RulesActivities:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # Synchronous activities: they run on the worker's thread pool, where the database driver
    # may block and heartbeats can be sent from the same thread.

    @activity.defn(name="rules_prepare")
    def prepare(self, params: PrepareInput) -> PrepareResult:
        with session_scope(self.settings.db_url) as session:
            try:
                version = service.version_by_digest(session, params.digest)
            except LookupError as exc:
                raise ApplicationError(
                    str(exc), type="UnknownRuleVersion", non_retryable=True
                ) from None
            rules = service.rules_of(version)
            run = service.start_run(session, version)
            session.commit()
            assert run.id is not None
            thresholds: dict[str, Any] = {}
            if params.rank:
                activity.heartbeat("ranking")
                thresholds = service.rank(session, run, rules, date.fromisoformat(params.today))
            total = session.exec(
                select(func.count()).select_from(Customer).where(col(Customer.internal).is_(False))
            ).one()
            return PrepareResult(
                run_id=run.id,
                total=int(total),
                thresholds={k: v for k, v in thresholds.items() if not k.endswith(".ranked")},
                bounds=slice_bounds(session, max(1, params.slices)),
                rankings=len(rules.rankings),
            )

    @activity.defn(name="rules_rank_pages")
    def rank_pages(self, params: ApplyPagesInput) -> ApplyPagesResult:
        """Store the ranking values of up to ``pages`` pages after ``after_id`` (a slice of
        the base, like ``rules_apply_pages``; heartbeats carry the cursor)."""
        details = activity.info().heartbeat_details
        progress = ApplyPagesResult(**details[0]) if details else ApplyPagesResult(params.after_id)
        # A retry may find its first page stored already by the attempt before.
        again = activity.info().attempt > 1
        today = date.fromisoformat(params.today)
        with _ENGINE, session_scope(self.settings.db_url) as session:
            run, version = self._run(session, params.run_id)
            rules = service.rules_of(version)
            for _ in range(params.pages):
                last, processed = service.rank_page(
                    session,
                    run=run,
                    rules=rules,
                    after_id=progress.last_id,
                    limit=params.page_size,
                    today=today,
                    until_id=params.until_id,
                    again=again,
                )
                if not processed:
                    progress.done = True
                    break
                progress.last_id, progress.processed = last, progress.processed + processed
                activity.heartbeat(progress)
        return progress

    @activity.defn(name="rules_thresholds")
    def thresholds(self, run_id: int) -> dict[str, float | int | None]:
        """Each ranking's threshold, once every slice stored its values."""
        with session_scope(self.settings.db_url) as session:
            run, version = self._run(session, run_id)
            found = service.set_thresholds(session, run, service.rules_of(version))
            return {k: v for k, v in found.items() if not k.endswith(".ranked")}

    @staticmethod
    def _run(session: Session, run_id: int) -> tuple[RuleRun, RuleVersion]:
        run = session.get(RuleRun, run_id)
        if run is None:
            raise ApplicationError(f"no rule run {run_id}", non_retryable=True)
        version = session.get(RuleVersion, run.rule_version_id)
        assert version is not None
        return run, version

    @activity.defn(name="rules_apply_pages")
    def apply_pages(self, params: ApplyPagesInput) -> ApplyPagesResult:
        """Decide up to ``pages`` pages after ``after_id``; heartbeats carry the cursor.

        durable_rules is not thread-safe and each process keeps one engine per rule set: a
        process decides one page at a time (the lock), and a worker polls these activities
        on their own task queue one at a time, so that Temporal spreads a run's slices over
        the worker processes there are."""
        with _ENGINE:
            return self._apply_pages(params)

    def _apply_pages(self, params: ApplyPagesInput) -> ApplyPagesResult:
        details = activity.info().heartbeat_details
        progress = ApplyPagesResult(last_id=params.after_id)
        if details:
            progress = ApplyPagesResult(**details[0])
        today = date.fromisoformat(params.today)
        tiers = Counter(progress.tiers)
        with session_scope(self.settings.db_url) as session:
            run, version = self._run(session, params.run_id)
            rules = service.rules_of(version)
            for _ in range(params.pages):
                page = service.apply_page(
                    session,
                    run=run,
                    rules=rules,
                    version=version,
                    after_id=progress.last_id,
                    limit=params.page_size,
                    today=today,
                    until_id=params.until_id,
                )
                if not page.processed:
                    progress.done = True
                    break
                progress.last_id = page.last_id
                progress.processed += page.processed
                progress.changed += page.changed
                tiers.update(page.tiers)
                progress.tiers = dict(tiers)
                activity.heartbeat(progress)
        log.info(
            "decided %d customers (ids %d to %d)",
            progress.processed,
            params.after_id + 1,
            progress.last_id,
        )
        return progress

    @activity.defn(name="rules_finish")
    def finish(self, params: FinishInput) -> None:
        with session_scope(self.settings.db_url) as session:
            run, _ = self._run(session, params.run_id)
            service.finish_run(session, run, params.counts)
