"""Durable workflows, and the queues and schedules they run on.

Importing this package registers every workflow with DBOS, which must happen before
launch so that recovery finds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webapp.config import Settings
from webapp.workflows.sweep import schedule as sweep_schedule
from webapp.workflows.sweep import sweep_workflow


@dataclass(frozen=True)
class QueueSpec:
    name: str
    worker_concurrency: int | None
    limiter: Any = None  # {"limit": n, "period": seconds} or None


def queue_specs(settings: Settings) -> list[QueueSpec]:
    """Every queue the app uses, with limits from the settings."""
    return [
        QueueSpec(
            "slack",
            settings.slack_concurrency,
            {"limit": settings.slack_rate_limit, "period": settings.slack_rate_period},
        ),
        QueueSpec(
            "email",
            settings.email_concurrency,
            {"limit": settings.email_rate_limit, "period": settings.email_rate_period},
        ),
        QueueSpec("outbox", settings.outbox_concurrency),
        QueueSpec(
            "requests",
            settings.batch_concurrency,
            {"limit": settings.batch_rate_limit, "period": settings.batch_rate_period},
        ),
        QueueSpec(
            "import",
            settings.import_concurrency,
            {"limit": settings.import_rate_limit, "period": settings.import_rate_period},
        ),
    ]


def schedule_specs(settings: Settings) -> list[Any]:
    """Every DBOS schedule; applied atomically at each start, so edits take effect."""
    return [{"schedule_name": "sweep", "workflow_fn": sweep_workflow,
             "schedule": sweep_schedule(settings.sweep_interval_seconds)}]
