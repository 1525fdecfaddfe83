"""Operator batches and the graceful shutdown: `/ops/batches`, `POST /ops/submit`,
`POST /ops/batch/{count}`, `GET /ops/batches/{id}` and `POST /ops/shutdown`.

A batch starts one durable workflow that enqueues the request workflows on the
rate-limited `requests` queue, and answers at once with a progress fragment that polls
itself (every second, until the batch is done). The shutdown asks the server to stop the
way its process manager would (SIGTERM): uvicorn stops accepting, running requests and
DBOS steps get their grace period, the process exits, and the manager starts it again.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Annotated, Any

from pydantic import Field, StringConstraints
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.core.durations import DURATIONS, LABELS
from webapp.core.forms import FormInvalid, FormModel, parse_form
from webapp.services import batches as plans
from webapp.services.access import requestable_resources
from webapp.services.audit import Action, record_event
from webapp.web.database import in_session
from webapp.web.errors import error_response
from webapp.web.rendering import render, wants_fragment, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.workflows import batches

log = logging.getLogger(__name__)
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]
RECENT = 20


class SubmitForm(FormModel):
    resource_id: int = Field(ge=1, le=2**31 - 1)  # beyond: no such resource, and beyond the column's range
    department: Annotated[str, StringConstraints(max_length=100)] = ""
    duration: Annotated[str, StringConstraints(pattern="^(" + "|".join(DURATIONS) + ")$")] = "8h"
    reason: Reason


class LoadForm(FormModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


class ShutdownForm(FormModel):
    reason: Reason


async def _choices(request: Request) -> dict[str, Any]:
    def load(session: Any) -> dict[str, Any]:
        return {"resource_options": [(r.id, r.name) for r in requestable_resources(session)],
                "department_options": [("", "Everyone active")] + [(d, d) for d in plans.departments(session)]}

    recent = await batches.recent()
    return {**await in_session(request, load), "recent": recent, "durations": [(k, LABELS[k]) for k in DURATIONS],
            "max_count": request.app.state.settings.batch_max_count}


async def batches_page(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                       values: dict[str, Any] | None = None, error: str | None = None) -> Response:
    """The latest batches (and, on the page, the forms that start one)."""
    if wants_json(request):
        return JSONResponse({"batches": [_recent_json(b) for b in await batches.recent()],
                             "max_count": request.app.state.settings.batch_max_count})
    context = {**await _choices(request), "errors": errors or {}, "values": values or {}, "error": error}
    # A refused htmx submit replaces the forms (with their errors), not the result region.
    headers = {"HX-Retarget": "#batch-forms", "HX-Reswap": "outerHTML"} if status_code >= 400 else None
    return render(request, "ops_batches.html", context, block="batch_forms", status_code=status_code, headers=headers)


def _recent_json(batch: batches.RecentBatch) -> dict[str, Any]:
    return {"batch_id": batch.batch_id, "status": batch.status, "created": batch.created and batch.created.isoformat(),
            "count": batch.count, "href": f"/ops/batches/{batch.batch_id}"}


async def _start(request: Request, kind: str, plan: Any, details: dict[str, Any]) -> Response:
    principal = current_principal(request)
    submissions = await in_session(request, plan)  # PlanRefused: a 409 saying why
    batch_id = await batches.start(submissions)
    await in_session(request, lambda s: record_event(
        s, actor=principal.email, actor_id=principal.id, action=Action.BATCH_STARTED, subject=f"workflow:{batch_id}",
        details={"kind": kind, "count": len(submissions), **details}))
    href = f"/ops/batches/{batch_id}"
    if wants_json(request):
        return JSONResponse({"batch_id": batch_id, "count": len(submissions), "href": href}, 202,
                            headers={"Location": href})
    if wants_fragment(request):
        return await _progress_response(request, batch_id, status_code=202)
    return RedirectResponse(href, status_code=303)


async def submit_batch(request: Request) -> Response:
    """Ask access to one resource for every active person in a department (or everyone)."""
    principal = current_principal(request)
    try:
        form = parse_form(SubmitForm, await request.form())
    except FormInvalid as invalid:
        if wants_json(request):
            raise  # a 422 with the fields (webapp.web.errors)
        return await batches_page(request, status_code=422, errors=invalid.errors, values=invalid.values)
    reason = f"{form.reason} (submitted by {principal.email})"
    return await _start(request, "people", lambda s: plans.for_people(
        s, request.app.state.settings, resource_id=form.resource_id, department=form.department,
        duration=form.duration, reason=reason), {"resource_id": form.resource_id, "department": form.department})


async def load_batch(request: Request) -> Response:
    """Start `count` request workflows through the rate-limited queue, for load."""
    principal = current_principal(request)
    form = parse_form(LoadForm, await request.form())
    count = request.path_params["count"]
    limit = request.app.state.settings.batch_max_count
    if not 1 <= count <= limit:
        raise HTTPException(422, f"Ask for between 1 and {limit:,} requests.")
    reason = form.reason or f"Load batch of {count} by {principal.email}"
    if len(reason) < 3:
        reason = f"Load batch: {reason}"
    return await _start(request, "load", lambda s: plans.for_load(
        s, request.app.state.settings, count=count, reason=reason), {})


async def _progress_response(request: Request, batch_id: str, *, status_code: int = 200) -> Response:
    found = await batches.progress(request.app.state.db, batch_id)
    if found is None:
        raise HTTPException(404, f"No batch with id {batch_id}.")
    if wants_json(request):
        return JSONResponse({**found.__dict__, "done": found.done, "percent": found.percent}, status_code)
    return render(request, "ops_batch.html", {"progress": found}, block="batch_progress", status_code=status_code)


async def batch_page(request: Request) -> Response:
    """One batch's progress (the fragment polls itself until the batch is done)."""
    return await _progress_response(request, request.path_params["batch_id"])


async def shutdown(request: Request) -> Response:
    """Stop this process gracefully; its process manager starts it again."""
    principal = current_principal(request)
    try:
        form = parse_form(ShutdownForm, await request.form())
    except FormInvalid as invalid:
        return error_response(request, 422, "Say why (at least 3 characters): it goes in the audit log.",
                              fields=invalid.errors)
    if getattr(request.app.state, "serving_pid", None) != os.getpid():
        raise HTTPException(409, "This process was not started by `webapp serve`; stop it with whatever started it.")
    settings = request.app.state.settings
    await in_session(request, lambda s: record_event(
        s, actor=principal.email, actor_id=principal.id, action=Action.SHUTDOWN, subject=f"executor:{settings.executor_id}",
        details={"reason": form.reason}))
    log.warning("shutdown requested", extra={"actor": principal.email, "reason": form.reason})
    message = (f"Executor {settings.executor_id} is shutting down: it stops taking work, lets running steps "
               f"finish (up to {settings.shutdown_grace_seconds:g} s), and exits; its process manager restarts it.")
    if wants_json(request):
        response: Response = JSONResponse({"executor_id": settings.executor_id, "message": message}, 202)
    else:
        context = {} if wants_fragment(request) else await _choices(request)
        response = render(request, "ops_batches.html", {**context, "message": message}, block="shutdown_notice",
                          status_code=202)
    response.background = BackgroundTask(os.kill, os.getpid(), signal.SIGTERM)  # once the answer is out
    return response


routes = [
    guarded_route("/ops/batches", batches_page, access=Access.admin),
    guarded_route("/ops/batches/{batch_id}", batch_page, access=Access.admin),
    guarded_route("/ops/submit", submit_batch, access=Access.admin, methods=["POST"]),
    guarded_route("/ops/batch/{count:int}", load_batch, access=Access.admin, methods=["POST"]),
    guarded_route("/ops/shutdown", shutdown, access=Access.admin, methods=["POST"]),
]
