"""Logs as JSON lines, each carrying the workflow, activity, campaign, journey and customer
it concerns: inside a real activity context (the Temporal SDK's ActivityEnvironment), and
from a worker process started with CLIENTELA_LOG_FORMAT=json."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import time
from pathlib import Path

from temporalio.testing import ActivityEnvironment

from clientela import logs
from clientela.settings import Settings
from tests.processes import start_worker


def captured(kind: str) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(logs.TemporalContext())
    handler.setFormatter(logs.formatter(kind, "worker"))
    logger = logging.getLogger(f"test-logs-{kind}")
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger, out


def test_a_record_carries_its_activity_campaign_and_customer() -> None:
    logger, out = captured("json")
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info,
        workflow_id="campaign-spring-2027",
        workflow_type="Campaign",
        activity_type="campaign_send_page",
    )
    env.run(lambda: logger.info("page sent", extra={"customer_id": "C00042"}))
    logger.warning(
        "journey record",
        extra={
            "temporal_workflow": {"workflow_id": "journey-welcome-C7", "workflow_type": "Journey"}
        },
    )
    logger.info("nothing to carry")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first == {
        "time": first["time"],
        "level": "INFO",
        "logger": "test-logs-json",
        "message": "page sent",
        "process": "worker",
        "customer_id": "C00042",
        "workflow_id": "campaign-spring-2027",
        "workflow_type": "Campaign",
        "activity": "campaign_send_page",
        "attempt": 1,
        "campaign_id": "spring-2027",
    }
    assert (second["journey"], second["workflow_type"], second["level"]) == (
        "welcome",
        "Journey",
        "WARNING",
    )
    assert "temporal_workflow" not in second
    assert set(third) == {"time", "level", "logger", "message", "process"}
    text_logger, text = captured("text")
    env.run(lambda: text_logger.info("page sent"))
    assert (
        text.getvalue()
        .rstrip()
        .endswith(
            "INFO page sent [workflow_id=campaign-spring-2027 workflow_type=Campaign "
            "activity=campaign_send_page attempt=1 campaign_id=spring-2027]"
        )
    )


def test_a_worker_logs_json_lines(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(settings.model_copy(update={"log_format": "json"}), log)
    try:
        deadline = time.monotonic() + 60
        while "polling task queue" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is a JSON document
    assert any(r["message"].startswith("worker polling task queue") for r in records)
    assert all(r["process"] == "worker" and r["level"] for r in records)
