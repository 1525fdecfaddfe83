"""`/ops/queues`, `/ops/schedules`, `/ops/executors`: what DBOS runs on, for admins.

Everything shown comes from DBOS's own API (queue rows, schedule rows, workflow lists), so
the page says what DBOS will do, not what the app meant to configure. Executors are the
exception: DBOS keeps no table of them, so they come from the heartbeat table
(webapp/services/executors.py), with their running workflows counted from DBOS.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from croniter import croniter
from dbos import DBOS
from pydantic import StringConstraints
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.services.audit import record_event
from webapp.core.durations import time_left
from webapp.core.forms import FormModel, parse_query
from webapp.services.executors import is_gone, list_executors
from webapp.core.models import utcnow
from webapp.web.ops.workflows import from_epoch_ms
from webapp.web.rendering import DataJSONResponse, render, wants_fragment, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.database import in_session

# Counts come from listing workflows (DBOS has no count API); past this many they are a floor.
SCAN_LIMIT = 10_000
WorkflowId = Annotated[str, StringConstraints(max_length=200, pattern=r"^[\w.:+-]*$")]


def _ago(then: datetime | None, now: datetime) -> str | None:
    if then is None:
        return None
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds} s" if seconds < 60 else time_left(seconds)


async def _active_workflows(**filters: Any) -> tuple[list[Any], bool]:
    """Oldest first, without inputs or outputs; and whether SCAN_LIMIT cut the list."""
    found = await DBOS.list_workflows_async(load_input=False, load_output=False, limit=SCAN_LIMIT + 1, **filters)
    return found[:SCAN_LIMIT], len(found) > SCAN_LIMIT


# Queues ------------------------------------------------------------------------------------

@dataclass
class QueueRow:
    name: str
    worker_concurrency: int | None
    global_concurrency: int | None
    limiter: dict[str, Any] | None
    polling_interval: float
    waiting: int = 0
    delayed: int = 0
    running: dict[str, int] = field(default_factory=dict)  # executor id -> PENDING workflows
    oldest_id: str | None = None
    oldest_since: datetime | None = None
    oldest_age: str | None = None


def _registered_queues() -> list[QueueRow]:
    """In a worker thread: DBOS's queue getters re-read the row, which is what we want here."""
    return [QueueRow(q.name, q.worker_concurrency, q.global_concurrency, q.limiter, q.polling_interval_sec)
            for q in sorted(DBOS.list_queues(), key=lambda q: q.name)]


async def queues_page(request: Request) -> Response:
    """Each registered queue: its limits as stored, what waits, what runs where, the oldest wait."""
    rows = {row.name: row for row in await run_in_threadpool(_registered_queues)}
    active, capped = await _active_workflows(queues_only=True)  # DELAYED, ENQUEUED, PENDING
    now = utcnow()
    running: dict[str, Counter[str]] = defaultdict(Counter)
    for w in active:
        row = rows.get(w.queue_name)
        if row is None:  # DBOS's internal queue (schedules, triggered runs)
            continue
        if w.status == "ENQUEUED":
            row.waiting += 1
            if row.oldest_id is None:
                row.oldest_id, row.oldest_since = w.workflow_id, from_epoch_ms(w.created_at)
                row.oldest_age = _ago(row.oldest_since, now)
        elif w.status == "DELAYED":
            row.delayed += 1
        elif w.status == "PENDING":
            running[row.name][w.executor_id or "?"] += 1
    for name, counts in running.items():
        rows[name].running = dict(sorted(counts.items()))
    if wants_json(request):
        return DataJSONResponse({"queues": list(rows.values()), "counts_capped": capped})
    return render(request, "ops_queues.html", {"rows": list(rows.values()), "capped": capped,
                                               "scan_limit": SCAN_LIMIT}, block="queues_table")


# Schedules ---------------------------------------------------------------------------------

class ScheduleQuery(FormModel):
    status: Literal["ACTIVE", "PAUSED"] | None = None
    started: WorkflowId = ""  # a triggered run, after a plain form's redirect


@dataclass(frozen=True)
class ScheduleRow:
    name: str
    workflow: str
    cron: str
    timezone: str
    status: str
    last_tick: datetime | None
    next_tick: datetime | None


def next_tick(cron: str, timezone: str | None, now: datetime) -> datetime:
    """When DBOS's scheduler fires next: it reads cron the same way (croniter, seconds first)."""
    zone = ZoneInfo(timezone) if timezone else UTC
    tick: datetime = croniter(cron, now.astimezone(zone), second_at_beginning=True).get_next(datetime)
    return tick.astimezone(UTC)


def _schedule_row(found: dict[str, Any], now: datetime) -> ScheduleRow:
    last = datetime.fromisoformat(found["last_fired_at"]).astimezone(UTC) if found["last_fired_at"] else None
    upcoming = next_tick(found["schedule"], found["cron_timezone"], now) if found["status"] == "ACTIVE" else None
    return ScheduleRow(found["schedule_name"], found["workflow_name"], found["schedule"],
                       found["cron_timezone"] or "UTC", found["status"], last, upcoming)


async def schedules_page(request: Request) -> Response:
    """Every DBOS schedule of the app: cron, active or paused, last and next tick."""
    return await _schedules_response(request, parse_query(ScheduleQuery, request.query_params))


async def _schedules_response(request: Request, query: ScheduleQuery, *, message: str | None = None,
                              started: str | None = None) -> Response:
    now = utcnow()
    found = await DBOS.list_schedules_async(status=query.status)
    rows = sorted((_schedule_row(s, now) for s in found), key=lambda r: r.name)
    if wants_json(request):
        return DataJSONResponse({"schedules": rows})
    return render(request, "ops_schedules.html", {"rows": rows, "query": query, "message": message,
                                                  "started": started or query.started or None},
                  block="schedules_table")


ACTIONS = {"pause": ("PAUSED", "schedule.paused"), "resume": ("ACTIVE", "schedule.resumed"),
           "trigger": (None, "schedule.triggered")}


def _apply(session: Session, name: str, verb: str, actor: str, actor_id: int | None) -> str | None:
    """Write the audit row, then change the schedule in DBOS, both before the commit: if either
    fails nothing is recorded. (DBOS's tables may be in another database, so only a failed
    commit after the DBOS call could leave a change unaudited.)"""
    found = DBOS.get_schedule(name)
    if found is None:
        raise HTTPException(404, f"There is no schedule named “{name}”.")
    target, action = ACTIONS[verb]
    if target is not None and found["status"] == target:
        raise HTTPException(409, f"The schedule “{name}” is already {target.lower()}.")
    event = record_event(session, actor=actor, actor_id=actor_id, action=action, subject=f"schedule:{name}",
                         details={"from": found["status"], "to": target} if target else {})
    if verb == "trigger":
        workflow_id = DBOS.trigger_schedule(name).workflow_id
        event.details = {"workflow_id": workflow_id}
        return workflow_id
    (DBOS.pause_schedule if verb == "pause" else DBOS.resume_schedule)(name)
    return None


def _schedule_action(verb: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        principal = current_principal(request)
        name = request.path_params["schedule"]
        if len(name) > 200:
            raise HTTPException(404, "There is no schedule by that name.")
        workflow_id = await in_session(request, lambda s: _apply(s, name, verb, principal.email, principal.id))
        if wants_json(request):
            status = (await DBOS.get_schedule_async(name) or {}).get("status")
            return JSONResponse({"schedule": name, "status": status, "workflow_id": workflow_id})
        if wants_fragment(request):
            done = {"pause": "paused", "resume": "resumed", "trigger": "triggered"}[verb]
            return await _schedules_response(request, ScheduleQuery(), message=f"Schedule “{name}” {done}.",
                                             started=workflow_id)
        return RedirectResponse("/ops/schedules" + (f"?{urlencode({'started': workflow_id})}" if workflow_id else ""),
                                status_code=303)

    endpoint.__name__ = f"{verb}_schedule"
    endpoint.__doc__ = f"{verb.capitalize()} a schedule (audited)."
    return endpoint


# Executors ---------------------------------------------------------------------------------

class ExecutorQuery(FormModel):
    state: Literal["alive", "gone", "unknown"] | None = None


@dataclass(frozen=True)
class ExecutorRow:
    executor_id: str
    state: str  # alive, gone, or unknown (running workflows, but no heartbeat row)
    app_version: str | None = None
    hostname: str | None = None
    pid: int | None = None
    started_at: datetime | None = None
    last_seen: datetime | None = None
    last_seen_ago: str | None = None
    running: int = 0
    this_process: bool = False


async def executors_page(request: Request) -> Response:
    """The processes sharing this database, by heartbeat, with their running workflows."""
    query = parse_query(ExecutorQuery, request.query_params)
    settings = request.app.state.settings
    beats = await in_session(request, list_executors)
    pending, capped = await _active_workflows(status="PENDING")
    running = Counter(w.executor_id for w in pending if w.executor_id)
    now = utcnow()
    rows = [ExecutorRow(b.executor_id, "gone" if is_gone(b.last_seen, now, settings.heartbeat_interval_seconds)
                        else "alive", b.app_version, b.hostname, b.pid, b.started_at, b.last_seen,
                        _ago(b.last_seen, now), running.pop(b.executor_id, 0),
                        b.executor_id == settings.executor_id and b.pid == os.getpid())
            for b in beats]
    rows += [ExecutorRow(executor, "unknown", running=count) for executor, count in sorted(running.items())]
    rows = [r for r in rows if query.state in (None, r.state)]
    if wants_json(request):
        return DataJSONResponse({"executors": rows, "counts_capped": capped})
    return render(request, "ops_executors.html", {"rows": rows, "query": query, "capped": capped,
                                                  "scan_limit": SCAN_LIMIT,
                                                  "interval": settings.heartbeat_interval_seconds},
                  block="executors_table")


routes = [
    guarded_route("/ops/queues", queues_page, access=Access.admin),
    guarded_route("/ops/schedules", schedules_page, access=Access.admin),
    *(guarded_route(f"/ops/schedules/{{schedule}}/{verb}", _schedule_action(verb), access=Access.admin,
                    methods=("POST",)) for verb in ACTIONS),
    guarded_route("/ops/executors", executors_page, access=Access.admin),
]
