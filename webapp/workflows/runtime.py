"""Starting and stopping DBOS for one process.

DBOS is a per-process singleton: `start_dbos` builds it from the settings (system
database, stable executor id, pinned application version), binds the app datasource,
launches, and registers queues and schedules; `stop_dbos` lets running steps finish
and tears it all down so a later start (a test, a restart in-process) begins clean.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dbos import DBOS, DBOSConfig, SetWorkflowID
from starlette.concurrency import run_in_threadpool

from webapp import workflows
from webapp.config import Settings
from webapp.core.db import Database, datasource, ensure_sqlite_directory
from webapp.workflows.notifications import configure_channels

log = logging.getLogger(__name__)
APP_NAME = "gatehouse"


def dbos_config(settings: Settings) -> DBOSConfig:
    system_url = settings.system_database_url
    config: DBOSConfig = {
        "name": APP_NAME,
        "system_database_url": system_url,
        "executor_id": settings.executor_id,
        "application_version": settings.app_version,
        "log_level": settings.log_level.upper(),
        "enable_otlp": False,
        "scheduler_polling_interval_sec": 5.0,
    }
    if system_url.startswith("sqlite"):
        # SQLite has no LISTEN/NOTIFY: recv/get_event poll, so keep the poll short.
        config["notification_listener_polling_interval_sec"] = 0.1
    return config


def start_dbos(settings: Settings, database: Database) -> None:
    ensure_sqlite_directory(settings.system_database_url)
    if dbos_is_launched():  # a previous launch in this process (tests) must not leak its config
        DBOS.destroy()
    DBOS(config=dbos_config(settings))
    datasource.bind(database)
    configure_channels(settings)
    DBOS.launch()


async def register_queues_and_schedules(settings: Settings) -> None:
    for queue in workflows.queue_specs(settings):
        await DBOS.register_queue_async(
            queue.name,
            worker_concurrency=queue.worker_concurrency,
            limiter=queue.limiter,
            polling_interval_sec=settings.queue_polling_interval,
            on_conflict="always_update",
        )
    await DBOS.apply_schedules_async(workflows.schedule_specs(settings))


def stop_dbos(*, grace_seconds: float = 10.0) -> None:
    """Stop taking work, give running workflows `grace_seconds`, then release everything.

    DBOS's own wait sleeps a whole second before its first look; polling here lets an
    idle process stop at once. Workflows still running at the deadline are recovered by
    the next process with this executor id.
    """
    instance = _dbos_instance()
    if instance is not None:
        for stop in instance.background_thread_stop_events:
            stop.set()  # queue workers stop dequeuing new work
        deadline = time.monotonic() + grace_seconds
        while instance._active_workflows_set.activeList() and time.monotonic() < deadline:
            time.sleep(0.05)
    DBOS.destroy()
    datasource.unbind()


def _dbos_instance() -> Any:
    from dbos import _dbos

    return _dbos._dbos_global_instance


def dbos_is_launched() -> bool:
    instance = _dbos_instance()
    return instance is not None and instance._launched


def _start_in_thread(workflow_id: str, workflow: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    with SetWorkflowID(workflow_id):
        return DBOS.start_workflow(workflow, *args)


async def start_workflow(workflow_id: str, workflow: Callable[..., Any], *args: Any) -> Any:
    """Start a sync workflow from async code, under an idempotent id.

    DBOS's `start_workflow_async` runs workflows on the event loop, which suits coroutine
    workflows only; ours are sync and may wait in `recv` for days, so they must start from
    a worker thread and run on DBOS's executor threads. Returns the (sync) handle.
    """
    return await run_in_threadpool(_start_in_thread, workflow_id, workflow, args)
