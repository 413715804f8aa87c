"""Logs: one line per record, as text or JSON (``CLIENTELA_LOG_FORMAT=json``), each carrying
the Temporal workflow and activity it came from, and the campaign, journey and customer it
concerns where known (python-json-logger)."""

from __future__ import annotations

import logging
import sys
from typing import Any

from pythonjsonlogger.json import JsonFormatter
from temporalio import activity

#: What a record may carry, besides its message (given as ``extra=`` or found here).
CONTEXT = ("workflow_id", "workflow_type", "activity", "attempt", "campaign_id", "journey",
           "customer_id")  # fmt: skip


class TemporalContext(logging.Filter):
    """Adds the workflow and activity of the record: from the running activity, or from the
    Temporal SDK's own ``temporal_workflow``/``temporal_activity`` extras; the campaign or
    journey from the workflow id (``campaign-<id>``, ``journey-<name>-...``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if activity.in_activity():
            info = activity.info()
            record.workflow_id = info.workflow_id
            record.workflow_type = info.workflow_type
            record.activity = info.activity_type
            record.attempt = info.attempt
        for key in ("temporal_workflow", "temporal_activity"):
            found: Any = getattr(record, key, None)
            if isinstance(found, dict):
                record.workflow_id = getattr(record, "workflow_id", None) or found.get(
                    "workflow_id"
                )
                record.workflow_type = getattr(record, "workflow_type", None) or found.get(
                    "workflow_type"
                )
                if "activity_type" in found:
                    record.activity = found["activity_type"]
        workflow_id = getattr(record, "workflow_id", None)
        if isinstance(workflow_id, str):
            if workflow_id.startswith("campaign-") and not hasattr(record, "campaign_id"):
                record.campaign_id = workflow_id.removeprefix("campaign-")
            elif workflow_id.startswith("journey-") and not hasattr(record, "journey"):
                record.journey = workflow_id.removeprefix("journey-").split("-", 1)[0]
        return True


class _Text(logging.Formatter):
    """``time process LEVEL message [key=value ...]``."""

    def __init__(self, process: str) -> None:
        super().__init__(f"%(asctime)s {process} %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        said = [f"{k}={getattr(record, k)}" for k in CONTEXT if getattr(record, k, None)]
        return f"{line} [{' '.join(said)}]" if said else line


def formatter(kind: str, process: str) -> logging.Formatter:
    if kind == "json":
        return JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"process": process},
            # The SDK's own extras are summarised into the fields above.
            reserved_attrs=[
                *logging.LogRecord("", 0, "", 0, "", None, None).__dict__,
                "temporal_workflow",
                "temporal_activity",
                "message",
            ],
        )
    return _Text(process)


def configure(kind: str, process: str, level: int = logging.INFO) -> None:
    """Every record of the process to standard error, in ``kind`` (text or json)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(TemporalContext())
    handler.setFormatter(formatter(kind, process))
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
