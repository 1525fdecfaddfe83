"""Every durable workflow, queue and schedule, and starting them in a process.

Importing this package registers every workflow with DBOS (each module below declares its
own), which must happen before launch so that recovery finds them. `start` launches DBOS
for this process with the app's datasource bound and the notification channels
configured; `register` stores the queues' limits and the schedules (both idempotent, at
every start); `stop` lets running work finish within a grace period.

    access         one workflow per access request; an early revoke
    notifications  one delivery workflow per message and channel
    slack          decisions from Slack's buttons, and the reply that updates the message
    drift          a schedule per agent that compares its targets with the grants
    fulfilment     one workflow per task that carries a grant (or its end) into a target
    imports        bulk people imports: a parent per run, a child per chunk
    batches        operator batches of access requests
    sweep          the schedule that expires orphaned requests and announces ending grants
    control        operator actions on workflows and schedules (cancel, resume, fork, ...)
    inspect        what DBOS runs, read for the operations console
    heartbeat      each process's heartbeat row
    takeover       adopting the workflows of executors that died for good
    runtime        DBOS's lifecycle, and the only use of its private API
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from webapp.agents import reach
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Agent
from webapp.services.agent_settings import AGENT_QUEUE_PREFIX
from webapp.workflows import access, batches, drift, fulfilment, imports, notifications, runtime, slack, sweep, takeover
from webapp.workflows.datasource import datasource

__all__ = ["QueueSpec", "queue_specs", "register", "schedule_specs", "start", "stop"]

WORKFLOW_MODULES = (access, batches, drift, fulfilment, imports, notifications, slack, sweep)  # each registers its workflows


@dataclass(frozen=True)
class QueueSpec:
    name: str
    worker_concurrency: int | None
    limiter: Any = None  # {"limit": n, "period": seconds} or None
    # How often each process looks for work (each look is a few queries and a commit): short
    # where a person waits, long for background work.
    polling_interval: float = 0.2


def _limited(name: str, concurrency: int, limit: int, period: float, polling_interval: float) -> QueueSpec:
    return QueueSpec(name, concurrency, {"limit": limit, "period": period}, polling_interval)


def queue_specs(settings: Settings) -> list[QueueSpec]:
    """Every queue the app uses, with limits and polling intervals from the settings."""
    notify, background = settings.notify_queue_polling_interval, settings.background_queue_polling_interval
    return [
        _limited(notifications.SLACK.queue_name, settings.slack_concurrency, settings.slack_rate_limit,
                 settings.slack_rate_period, notify),
        _limited(notifications.EMAIL.queue_name, settings.email_concurrency, settings.email_rate_limit,
                 settings.email_rate_period, notify),
        QueueSpec(notifications.OUTBOX.queue_name, settings.outbox_concurrency, polling_interval=notify),
        _limited(batches.QUEUE, settings.batch_concurrency, settings.batch_rate_limit, settings.batch_rate_period,
                 settings.queue_polling_interval),
        _limited(imports.QUEUE, settings.import_concurrency, settings.import_rate_limit, settings.import_rate_period,
                 background),
        QueueSpec(takeover.QUEUE, None, polling_interval=background),  # adopted workflows that had no queue of their own
    ]


def schedule_specs(settings: Settings) -> list[Any]:
    """Every DBOS schedule; applied atomically at each start, so edits take effect."""
    return [{"schedule_name": "sweep", "workflow_fn": sweep.sweep_workflow,
             "schedule": sweep.schedule(settings.sweep_interval_seconds)}]


def start(settings: Settings, database: Database, *, queues: Iterable[str] | None = None) -> None:
    """Launch DBOS for this process over `database`; `queues`: dequeue only from these
    (the import CLI takes import chunks, never the server's work)."""

    def prepare() -> None:
        datasource.bind(database)
        notifications.configure_channels(settings)
        fulfilment.configure(settings)
        reach.configure(settings.agent_allowed_hosts, settings.agent_secrets_dir)

    runtime.launch(settings, prepare=prepare, queues=queues)


def register(settings: Settings, database: Database | None = None, *, only: Iterable[str] | None = None) -> None:
    """Store the queues' limits (all, or `only` these) and, for the whole app, the schedules
    (with each agent's drift schedule, read from `database`).
    Blocking: from async code, call it in a worker thread."""
    wanted = None if only is None else set(only)
    for queue in queue_specs(settings):
        if wanted is None or queue.name in wanted:
            DBOS.register_queue(queue.name, worker_concurrency=queue.worker_concurrency, limiter=queue.limiter,
                                polling_interval_sec=queue.polling_interval, on_conflict="always_update")
    if wanted is None:
        DBOS.apply_schedules(schedule_specs(settings))
        runtime.key_unpartitioned(AGENT_QUEUE_PREFIX)  # attempts enqueued before agent queues were partitioned
        if database is not None:
            with database.session() as session:
                drift.apply_schedules(session.execute(sa.select(Agent.id, Agent.kind, Agent.drift_interval_seconds))
                                      .all())


def stop(*, grace_seconds: float) -> None:
    """Let running workflows go on for `grace_seconds`, then release DBOS and the datasource."""
    runtime.stop(grace_seconds=grace_seconds)
    datasource.unbind()
