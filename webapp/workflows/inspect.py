"""What DBOS runs, read for the operations console, in the console's own types.

Read from DBOS's own API (workflow lists, steps, queue and schedule rows), so the pages
show what DBOS will recover, cancel or resume, not what the app meant to configure. DBOS's
epoch milliseconds become aware UTC datetimes here, once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from dbos import DBOS, WorkflowStatus

from webapp.core.background import in_thread

# The statuses DBOS gives a workflow.
STATUSES = ("PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


def from_epoch_ms(epoch_ms: int | None) -> datetime | None:
    """A DBOS timestamp (epoch milliseconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms else None


@dataclass(frozen=True)
class WorkflowInfo:
    id: str
    name: str
    status: str
    queue: str | None
    executor: str | None
    app_version: str | None
    recovery_attempts: int | None
    created: datetime | None
    updated: datetime | None
    parent: str | None
    forked_from: str | None
    # Loaded only when asked for (`load=True`): they can be large.
    input: Any = None
    output: Any = None
    error: Any = None


def _info(w: WorkflowStatus) -> WorkflowInfo:
    return WorkflowInfo(w.workflow_id, w.name, w.status, w.queue_name, w.executor_id, w.app_version,
                        w.recovery_attempts, from_epoch_ms(w.created_at), from_epoch_ms(w.updated_at),
                        w.parent_workflow_id, w.forked_from, w.input, w.output, w.error)


async def workflows(*, ids: list[str] | None = None, status: str | None = None, name: str | None = None,
                    queue: str | None = None, prefix: str | None = None, since: datetime | None = None,
                    until: datetime | None = None, parent: str | None = None, forked_from: str | None = None,
                    queues_only: bool = False, limit: int | None = None, offset: int | None = None,
                    newest_first: bool = False, load: bool = False) -> list[WorkflowInfo]:
    """Workflows matching every filter given (oldest first unless `newest_first`)."""
    found = await DBOS.list_workflows_async(
        workflow_ids=ids, status=status, name=name, queue_name=queue, workflow_id_prefix=prefix,
        start_time=since.isoformat() if since else None, end_time=until.isoformat() if until else None,
        parent_workflow_id=parent, forked_from=forked_from, queues_only=queues_only, limit=limit, offset=offset,
        sort_desc=newest_first, load_input=load, load_output=load)
    return [_info(w) for w in found]


async def workflow(workflow_id: str, *, load: bool = False) -> WorkflowInfo | None:
    found = await workflows(ids=[workflow_id], load=load)
    return found[0] if found else None


@dataclass(frozen=True)
class StepInfo:
    number: int
    name: str
    started: datetime | None
    duration_ms: int | None
    output: Any
    error: Any  # the exception the step raised, as DBOS recorded it
    child: str | None  # the workflow this step started


async def steps(workflow_id: str, *, load_output: bool = True) -> list[StepInfo]:
    raw = await DBOS.list_workflow_steps_async(workflow_id, load_output=load_output)
    return [StepInfo(s["function_id"], s["function_name"], from_epoch_ms(s["started_at_epoch_ms"]),
                     (s["completed_at_epoch_ms"] - s["started_at_epoch_ms"])
                     if s["completed_at_epoch_ms"] and s["started_at_epoch_ms"] else None,
                     s["output"], s["error"], s["child_workflow_id"]) for s in raw]


@dataclass(frozen=True)
class QueueInfo:
    name: str
    worker_concurrency: int | None
    global_concurrency: int | None
    limiter: dict[str, Any] | None
    polling_interval: float


def _queues() -> list[QueueInfo]:
    return [QueueInfo(q.name, q.worker_concurrency, q.global_concurrency, q.limiter, q.polling_interval_sec)
            for q in sorted(DBOS.list_queues(), key=lambda q: q.name)]


async def queues() -> list[QueueInfo]:
    """Every registered queue with its limits as stored (DBOS's getters re-read the row: in a thread)."""
    return await in_thread(_queues)


@dataclass(frozen=True)
class ScheduleInfo:
    name: str
    workflow: str
    cron: str
    timezone: str | None
    status: str  # ACTIVE or PAUSED
    last_fired: datetime | None


def _schedule(found: Any) -> ScheduleInfo:
    last = datetime.fromisoformat(found["last_fired_at"]).astimezone(UTC) if found["last_fired_at"] else None
    return ScheduleInfo(found["schedule_name"], found["workflow_name"], found["schedule"], found["cron_timezone"],
                        found["status"], last)


async def schedules(*, status: str | None = None) -> list[ScheduleInfo]:
    return [_schedule(s) for s in await DBOS.list_schedules_async(status=status)]


async def schedule(name: str) -> ScheduleInfo | None:
    found = await DBOS.get_schedule_async(name)
    return None if found is None else _schedule(found)
