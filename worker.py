"""The Temporal worker: every workflow and activity of Clientela on one task queue.

Run with ``python worker.py`` (or ``clientela worker``); settings come from the environment.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from pydantic import ValidationError
from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.campaigns import CampaignActivities
from activities.complaints import ComplaintActivities
from activities.journeys import JourneyActivities
from activities.messaging import MessagingActivities
from activities.models import ModelActivities
from activities.orders import OrderActivities
from activities.rules import RulesActivities, rules_queue
from clientela.db import get_engine
from clientela.journeys.router import ensure_date_schedule
from clientela.settings import Settings, configuration_problems, load_settings
from clientela.temporal import connect, metrics_runtime
from workflows.campaign import CampaignWorkflow, pages_queue
from workflows.complaint import ComplaintCase
from workflows.dates import DateJourneys
from workflows.journey import JourneyWorkflow
from workflows.models import ModelTraining
from workflows.order import OrderFulfilment
from workflows.rules_apply import RulesApply
from workflows.welcome import WelcomeJourney

# WelcomeJourney stays for welcomes started before journeys were defined in data.
WORKFLOWS = [
    WelcomeJourney,
    JourneyWorkflow,
    DateJourneys,
    RulesApply,
    CampaignWorkflow,
    OrderFulfilment,
    ComplaintCase,
    ModelTraining,
]


class Workers:
    """A process's Temporal workers, run together: everything on the task queue; the rules
    pages on their own queue one at a time (durable_rules is one engine per process), so that
    a ``rules apply`` spreads its slices over the processes there are; and campaign pages on
    theirs, so that a campaign's lanes go to whichever processes are free."""

    def __init__(self, main: Worker, *others: Worker) -> None:
        self.main, self.others = main, others
        self.task_queue = main.task_queue

    async def __aenter__(self) -> Workers:
        await self.main.__aenter__()
        entered: list[Worker] = []
        try:
            for worker in self.others:
                await worker.__aenter__()
                entered.append(worker)
        except BaseException:
            for worker in reversed(entered):
                await worker.__aexit__(None, None, None)
            await self.main.__aexit__(None, None, None)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await asyncio.gather(*(w.__aexit__(exc_type, exc, tb) for w in self.others))
        finally:
            await self.main.__aexit__(exc_type, exc, tb)


def build_worker(client: Client, settings: Settings, task_queue: str | None = None) -> Workers:
    queue = task_queue or settings.task_queue
    rules = RulesActivities(settings)
    messaging = MessagingActivities(settings)
    campaigns = CampaignActivities(messaging)
    return Workers(
        _main_worker(client, settings, queue, messaging, campaigns),
        Worker(
            client,
            task_queue=rules_queue(queue),
            activities=[rules.rank_pages, rules.apply_pages],
            activity_executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules"),
            max_concurrent_activities=1,
            graceful_shutdown_timeout=settings.worker_shutdown_grace,
        ),
        Worker(
            client,
            task_queue=pages_queue(queue),
            activities=[campaigns.send_page],
            # As many pages at once as a campaign has lanes: one process alone sends them all.
            max_concurrent_activities=settings.campaign_lanes,
            graceful_shutdown_timeout=settings.worker_shutdown_grace,
        ),
    )


def _main_worker(
    client: Client,
    settings: Settings,
    task_queue: str,
    messaging: MessagingActivities,
    campaigns: CampaignActivities,
) -> Worker:
    rules = RulesActivities(settings)
    orders = OrderActivities(settings)
    journeys = JourneyActivities(settings, client)
    complaints = ComplaintActivities(settings)
    models = ModelActivities(settings)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        workflow_runner=workflow_runner(settings),
        activities=[
            messaging.send_messages,
            rules.prepare,
            rules.apply_pages,
            rules.thresholds,
            rules.finish,
            campaigns.stage,
            campaigns.prepare,
            campaigns.send_page,
            campaigns.proof,
            campaigns.pilot_check,
            campaigns.report,
            orders.fulfil,
            journeys.local_time,
            journeys.condition,
            journeys.date_journeys,
            complaints.clock,
            complaints.messages,
            complaints.mark,
            models.train,
        ],
        # Synchronous activities (the rules) run here; async ones on the event loop.
        activity_executor=ThreadPoolExecutor(
            max_workers=settings.worker_max_concurrent_activities, thread_name_prefix="activity"
        ),
        max_concurrent_activities=settings.worker_max_concurrent_activities,
        max_concurrent_workflow_tasks=settings.worker_max_concurrent_workflow_tasks,
        # On shutdown, running activities get this long to finish; then they are cancelled
        # and Temporal hands them to another worker (every activity resumes from its ledger).
        graceful_shutdown_timeout=settings.worker_shutdown_grace,
    )


#: Workflow modules imported once per worker process instead of once per workflow run.
#: Temporal's sandbox imports a workflow's module afresh for every run, and checks every call
#: in it (a ``datetime.now()`` or a file read fails the workflow task). For the journey, which
#: runs every welcome, birthday and win-back, that import and ``@workflow.defn`` were about a
#: sixth of the worker's CPU per welcome (``bench.welcome``, sampled with py-spy). Its code
#: changes only with a release, and the test suite runs it under the strict sandbox
#: (``workflow_sandbox="strict"``), as the saved histories replay (``tests/test_replay.py``).
#: The modules it imports through the sandbox are listed with it: type hints of its inputs
#: and results are looked up in the sandbox's own ``sys.modules``.
IMPORTED_ONCE = (
    "workflows.journey",
    "workflows.journey_data",
    "workflows.messages",
    "workflows.search",
    "activities.contracts",
)


def workflow_runner(settings: Settings) -> SandboxedWorkflowRunner:
    """Temporal's sandbox; ``workflow_sandbox="fast"`` passes ``IMPORTED_ONCE`` through it."""
    if settings.workflow_sandbox == "strict":
        return SandboxedWorkflowRunner()
    return SandboxedWorkflowRunner(
        restrictions=SandboxRestrictions.default.with_passthrough_modules(*IMPORTED_ONCE)
    )


#: The project's packages: Temporal's sandbox imports the workflows' modules among them again
#: for every workflow run (that is how it keeps runs apart).
PACKAGES = ("workflows", "activities", "clientela", "rules", "models")


def compile_bytecode(root: Path | None = None) -> bool:
    """Compile the project's modules to bytecode where they have none or it is stale.

    From source, each of the sandbox's imports compiles the file again: ``bench.welcome``
    measured 41 ms of worker CPU per welcome journey without bytecode, 31 ms with it. An
    installed package has its bytecode (pip compiles it at install); a source checkout run
    with PYTHONDONTWRITEBYTECODE (or never imported) has none. Written once here, checked
    by modification time after that; a read-only tree is left as it is."""
    import compileall

    from clientela import ROOT

    done = True
    for package in PACKAGES:
        done = compileall.compile_dir((root or ROOT) / package, quiet=2) and done
    if not done:
        logging.info("some modules could not be compiled (read-only?): workflows run slower")
    return bool(done)


async def run(settings: Settings) -> None:
    get_engine(settings.db_url)  # create the schema before the first activity needs it
    compile_bytecode()
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.worker_metrics_port, addr=settings.metrics_host)
        logging.info(
            "metrics on http://%s:%d/metrics", settings.metrics_host, settings.worker_metrics_port
        )
    client = await connect(settings, metrics_runtime(settings))
    worker = build_worker(client, settings)
    if await ensure_date_schedule(client, settings):
        logging.info("created the hourly schedule of the date journeys")
    from clientela.predictive.schedules import ensure_model_schedules

    for name in await ensure_model_schedules(client, settings):
        logging.info("model %s retrains on its schedule", name)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with worker:
        logging.info("worker polling task queue %r", worker.task_queue)
        await stop.wait()


def quiet_libraries() -> None:
    """Libraries speak at WARNING: the Twilio client logs every request at INFO (thousands
    of lines a campaign), aiosmtplib and httpx every connection, alembic its plugins."""
    for name in ("twilio", "aiosmtplib", "httpx", "aiohttp.access", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main() -> None:
    from clientela import logs
    from clientela.db import SchemaOutdated

    try:
        settings = load_settings()
    except ValidationError as exc:  # one line naming each setting, as the CLI says it
        print(f"error: configuration: {configuration_problems(exc)}", file=sys.stderr)
        sys.exit(2)
    logs.configure(settings.log_format, "worker")
    quiet_libraries()
    try:
        asyncio.run(run(settings))
    except SchemaOutdated as exc:  # said plainly, with the command to run; no traceback
        logging.error("%s", exc)
        logging.shutdown()
        os._exit(1)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: the Temporal client's threads can abort it
    # (temporalio/sdk-python#300). The worker has shut down cleanly by now.
    os._exit(0)


if __name__ == "__main__":
    main()
