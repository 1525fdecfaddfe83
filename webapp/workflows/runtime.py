"""DBOS for one process, and the only module that reaches into DBOS's private API.

DBOS is a per-process singleton. `launch` builds it from the settings (system database,
stable executor id, pinned application version) and launches it; `stop` lets running
steps finish, then tears it down so a later launch (a test, a restart in-process) begins
clean. Everything here that uses `dbos._*` is pinned to DBOS 3.4 (pyproject.toml); when
DBOS changes, this is the one file to read again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, DBOSConfig, SetWorkflowID
from dbos._context import get_local_dbos_context
from dbos._dbos import _get_or_create_dbos_registry
from dbos._error import DBOSMaxStepRetriesExceeded, DBOSWorkflowCancelledError

from webapp.config import Settings
from webapp.core.background import in_thread
from webapp.core.db import ensure_sqlite_directory
from webapp.core.logging_setup import read_workflow_ids_from

__all__ = ["MaxStepRetriesExceeded", "WorkflowCancelled"]

log = logging.getLogger(__name__)
APP_NAME = "gatehouse"

# DBOS raises these but does not export them (3.4).
MaxStepRetriesExceeded = DBOSMaxStepRetriesExceeded
WorkflowCancelled = DBOSWorkflowCancelledError


def current_workflow_id() -> str | None:
    """The workflow this thread runs (or is about to start, under SetWorkflowID); for logs."""
    ctx = get_local_dbos_context()
    return ctx.workflow_id if ctx is not None and ctx.workflow_id else None


read_workflow_ids_from(current_workflow_id)


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


def adopt_earlier_system_file(settings: Settings) -> None:
    """Before 0.2 the SQLite system database beside var/gatehouse.sqlite was named
    gatehouse-dbos.sqlite; it is gatehouse_dbos.sqlite now, where DBOS's CLI looks. Rename a
    file of the earlier name once, so the workflows it holds are recovered, not forgotten."""
    url = settings.system_database_url
    if settings.dbos_system_database_url or not url.startswith("sqlite:///"):
        return
    now = Path(url.removeprefix("sqlite:///"))
    before = now.with_name(now.name.replace("_dbos", "-dbos"))
    if before.exists() and not now.exists():
        for suffix in ("", "-wal", "-shm"):
            if Path(f"{before}{suffix}").exists():
                Path(f"{before}{suffix}").rename(f"{now}{suffix}")
        log.warning("renamed the DBOS system database %s to %s", before, now)


def launch(settings: Settings, *, prepare: Callable[[], None], queues: Iterable[str] | None = None) -> None:
    """Build DBOS from `settings`, run `prepare` (bind datasources, configure instances:
    what recovered workflows need), and launch. `queues`: dequeue only from these."""
    ensure_sqlite_directory(settings.system_database_url)
    adopt_earlier_system_file(settings)
    if is_launched():  # a previous launch in this process (tests) must not leak its config
        DBOS.destroy()
    DBOS(config=dbos_config(settings))
    if queues is not None:
        DBOS.listen_queues(list(queues))
    prepare()
    DBOS.launch()


def stop(*, grace_seconds: float = 10.0) -> None:
    """Stop taking work, give running workflows `grace_seconds`, then release everything.

    DBOS's own wait sleeps a whole second before its first look; polling here lets an
    idle process stop at once. Workflows still running at the deadline are recovered by
    the next process with this executor id.
    """
    instance = _instance()
    if instance is not None:
        for stop_event in instance.background_thread_stop_events:
            stop_event.set()  # queue workers stop dequeuing new work
        deadline = time.monotonic() + grace_seconds
        while instance._active_workflows_set.activeList() and time.monotonic() < deadline:
            time.sleep(0.05)
    DBOS.destroy()


def _instance() -> Any:
    from dbos import _dbos

    return _dbos._dbos_global_instance


def is_launched() -> bool:
    instance = _instance()
    return instance is not None and instance._launched


def forget_datasource(datasource: Any) -> None:
    """Drop a datasource from DBOS's registry, which outlives `DBOS.destroy()`, so the next
    launch binds afresh."""
    registered = _get_or_create_dbos_registry().datasources
    if datasource in registered:
        registered.remove(datasource)


async def ping() -> None:
    """Raise unless DBOS is launched and its system database answers (readiness)."""
    if not is_launched():
        raise RuntimeError("DBOS is not launched")
    await DBOS.list_workflows_async(limit=1, load_input=False, load_output=False)


async def is_known(workflow_id: str) -> bool:
    """Whether DBOS has a workflow with this id."""
    return await DBOS.get_workflow_status_async(workflow_id) is not None


def _start_in_thread(workflow_id: str, workflow: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    with SetWorkflowID(workflow_id):
        return DBOS.start_workflow(workflow, *args)


async def start_workflow(workflow_id: str, workflow: Callable[..., Any], *args: Any) -> Any:
    """Start a sync workflow from async code, under an idempotent id.

    DBOS's `start_workflow_async` runs workflows on the event loop, which suits coroutine
    workflows only; ours are sync and may wait in `recv` for days, so they must start from
    a worker thread and run on DBOS's executor threads. Returns the (sync) handle.
    """
    return await in_thread(_start_in_thread, workflow_id, workflow, args)


def reenqueue_pending(executor_id: str, queue_name: str) -> list[str]:
    """Hand `executor_id`'s PENDING workflows (of this application version) to the queues:
    each goes back to its own queue, or to `queue_name` when it had none, for one live
    process to dequeue. Idempotent and race-free: DBOS re-enqueues a workflow only while it
    is still PENDING under `executor_id`, so when several processes call this at once each
    workflow is handed over once. Returns the ids this call handed over. (DBOS's own
    `_recover_pending_workflows` does the same without saying which it moved.)"""
    from dbos._shard_keys import bind_shard_keys
    from dbos._utils import GlobalParams

    system = _instance()._sys_db
    moved = []
    for pending in system.get_pending_workflows(executor_id, GlobalParams.app_version):
        with bind_shard_keys({pending.workflow_id: pending.shard_key}):
            if system.reenqueue_for_recovery(pending.workflow_id, [executor_id], queue_name):
                moved.append(pending.workflow_id)
    return moved


def key_unpartitioned(queue_prefix: str) -> int:
    """Give every ENQUEUED workflow on the queues named `queue_prefix`* that has no partition
    key a key of its own (its id). A queue that became partitioned dequeues keyed workflows
    only, so ones enqueued before it did would otherwise wait for ever. How many were keyed."""
    system = _instance()._sys_db
    status = system.tables.workflow_status
    with system.engine.begin() as conn:
        return int(conn.execute(
            sa.update(status)
            .where(status.c.queue_name.like(f"{queue_prefix}%"), status.c.status == "ENQUEUED",
                   status.c.queue_partition_key.is_(None))
            .values(queue_partition_key=status.c.workflow_uuid)).rowcount)
