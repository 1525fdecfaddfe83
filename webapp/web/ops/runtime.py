"""`/ops/queues`, `/ops/schedules`, `/ops/executors`: what DBOS runs on, for admins.

Everything shown comes from DBOS's own API (queue rows, schedule rows, workflow lists), so
the page says what DBOS will do, not what the app meant to configure. Executors are the
exception: DBOS keeps no table of them, so they come from the heartbeat table
(webapp.services.executors), with their running workflows counted from DBOS
(webapp.workflows.inspect), who adopted a dead one's workflows, and an "adopt now" for
operators (webapp.workflows.takeover).
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
from pydantic import StringConstraints
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.core.background import in_thread
from webapp.core.durations import time_left
from webapp.core.forms import FormModel, parse_query
from webapp.core.models import utcnow
from webapp.services.executors import is_gone, list_executors
from webapp.web.database import in_session
from webapp.web.flash import redirect_with
from webapp.web.rendering import DataJSONResponse, render, wants_fragment, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.workflows import control, inspect, takeover

# Counts come from listing workflows (DBOS has no count API); past this many they are a floor.
SCAN_LIMIT = 10_000
WorkflowId = Annotated[str, StringConstraints(max_length=200, pattern=r"^[\w.:+-]*$")]


def _ago(then: datetime | None, now: datetime) -> str | None:
    if then is None:
        return None
    seconds = max(0, int((now - then).total_seconds()))
    return f"{seconds} s" if seconds < 60 else time_left(seconds)


async def _active_workflows(**filters: Any) -> tuple[list[inspect.WorkflowInfo], bool]:
    """Oldest first, without inputs or outputs; and whether SCAN_LIMIT cut the list."""
    found = await inspect.workflows(limit=SCAN_LIMIT + 1, **filters)
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


async def queues_page(request: Request) -> Response:
    """Each registered queue: its limits as stored, what waits, what runs where, the oldest wait."""
    rows = {q.name: QueueRow(q.name, q.worker_concurrency, q.global_concurrency, q.limiter, q.polling_interval)
            for q in await inspect.queues()}
    active, capped = await _active_workflows(queues_only=True)  # DELAYED, ENQUEUED, PENDING
    now = utcnow()
    running: dict[str, Counter[str]] = defaultdict(Counter)
    for w in active:
        row = rows.get(w.queue or "")
        if row is None:  # DBOS's internal queue (schedules, triggered runs)
            continue
        if w.status == "ENQUEUED":
            row.waiting += 1
            if row.oldest_id is None:
                row.oldest_id, row.oldest_since = w.id, w.created
                row.oldest_age = _ago(row.oldest_since, now)
        elif w.status == "DELAYED":
            row.delayed += 1
        elif w.status == "PENDING":
            running[row.name][w.executor or "?"] += 1
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


def _schedule_row(found: inspect.ScheduleInfo, now: datetime) -> ScheduleRow:
    upcoming = next_tick(found.cron, found.timezone, now) if found.status == "ACTIVE" else None
    return ScheduleRow(found.name, found.workflow, found.cron, found.timezone or "UTC", found.status,
                       found.last_fired, upcoming)


async def schedules_page(request: Request) -> Response:
    """Every DBOS schedule of the app: cron, active or paused, last and next tick."""
    return await _schedules_response(request, parse_query(ScheduleQuery, request.query_params))


async def _schedules_response(request: Request, query: ScheduleQuery, *, message: str | None = None,
                              started: str | None = None) -> Response:
    now = utcnow()
    found = await inspect.schedules(status=query.status)
    rows = sorted((_schedule_row(s, now) for s in found), key=lambda r: r.name)
    if wants_json(request):
        return DataJSONResponse({"schedules": rows})
    return render(request, "ops_schedules.html", {"rows": rows, "query": query, "message": message,
                                                  "started": started or query.started or None},
                  block="schedules_table")


def _schedule_action(verb: str) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        principal = current_principal(request)
        name = request.path_params["schedule"]
        if len(name) > 200:
            raise HTTPException(404, "There is no schedule by that name.")
        workflow_id = await in_session(request, lambda s: control.act_on_schedule(s, name, verb, principal))
        if wants_json(request):
            found = await inspect.schedule(name)
            status = found.status if found else None
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
    adopted_by: str | None = None
    adopted_at: datetime | None = None
    adopted_count: int = 0

    @property
    def adoptable(self) -> bool:
        """An operator may adopt its workflows now: it is not alive and has some."""
        return self.state != "alive" and self.running > 0 and not self.this_process


async def executors_page(request: Request) -> Response:
    """The processes sharing this database, by heartbeat, with their running workflows."""
    query = parse_query(ExecutorQuery, request.query_params)
    settings = request.app.state.settings
    beats = await in_session(request, list_executors)
    pending, capped = await _active_workflows(status="PENDING")
    running = Counter(w.executor for w in pending if w.executor)
    now = utcnow()
    rows = [ExecutorRow(b.executor_id, "gone" if is_gone(b.last_seen, now, settings.heartbeat_interval_seconds)
                        else "alive", b.app_version, b.hostname, b.pid, b.started_at, b.last_seen,
                        _ago(b.last_seen, now), running.pop(b.executor_id, 0),
                        b.executor_id == settings.executor_id and b.pid == os.getpid(),
                        b.adopted_by, b.adopted_at, b.adopted_count or 0)
            for b in beats]
    rows += [ExecutorRow(executor, "unknown", running=count) for executor, count in sorted(running.items())]
    rows = [r for r in rows if query.state in (None, r.state)]
    if wants_json(request):
        return DataJSONResponse({"executors": rows, "counts_capped": capped})
    return render(request, "ops_executors.html", {"rows": rows, "query": query, "capped": capped,
                                                  "scan_limit": SCAN_LIMIT,
                                                  "interval": settings.heartbeat_interval_seconds,
                                                  "lease": settings.executor_lease_seconds},
                  block="executors_table")


async def adopt_executor(request: Request) -> Response:
    """Adopt an executor's pending workflows now, without waiting for its lease to run out
    (it must not be alive: stop it first). Audited; one live process runs each workflow."""
    principal = current_principal(request)
    settings = request.app.state.settings
    dead = request.path_params["executor_id"]
    if not 0 < len(dead) <= 200:
        raise HTTPException(404, "There is no executor by that name.")
    if dead == settings.executor_id:
        raise HTTPException(409, "This is this process's own executor.")
    beats = {b.executor_id: b for b in await in_session(request, list_executors)}
    if dead in beats and not is_gone(beats[dead].last_seen, utcnow(), settings.heartbeat_interval_seconds):
        raise HTTPException(409, f"Executor {dead} is alive (it beat {_ago(beats[dead].last_seen, utcnow())} ago). "
                                 "Stop its process first, or let its lease run out.")
    adoption = await in_thread(takeover.adopt, request.app.state.db, dead, by=settings.executor_id,
                               actor=principal.email, actor_id=principal.id, reason="adopted by an operator")
    message = f"Adopted {len(adoption.workflow_ids)} workflows of {dead}."
    if wants_json(request):
        return JSONResponse({"executor_id": dead, "adopted": adoption.workflow_ids})
    return redirect_with(request, "/ops/executors", message)


routes = [
    guarded_route("/ops/queues", queues_page, access=Access.admin),
    guarded_route("/ops/schedules", schedules_page, access=Access.admin),
    *(guarded_route(f"/ops/schedules/{{schedule}}/{verb}", _schedule_action(verb), access=Access.admin,
                    methods=("POST",)) for verb in control.SCHEDULE_ACTIONS),
    guarded_route("/ops/executors", executors_page, access=Access.admin),
    guarded_route("/ops/executors/{executor_id:path}/adopt", adopt_executor, access=Access.admin, methods=["POST"]),
]
