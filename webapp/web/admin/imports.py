"""Admin pages for bulk imports: start one, follow it, cancel, resume, retry failed chunks.

Starting runs the job's parent workflow under an id derived from the form's key (a double
submit starts one job) and waits for the workflow to say which job it recorded. While a
job runs, its page listens to `/admin/import/{id}/events`, which sends the progress
section again whenever it changes; without JavaScript the page has a refresh link.
`Accept: application/json` gets the progress as JSON (the CLI and scripts).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator
from sse_starlette import ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.core.background import in_thread
from webapp.core.forms import FormInvalid, FormModel, parse_form, parse_query
from webapp.core.models import ChunkStatus, ImportStatus, utcnow
from webapp.live.feed import Subscription
from webapp.services.people_import import jobs
from webapp.services.people_import.orders import ImportOrder, NewJob, NewRun
from webapp.services.people_import.plan import MAX_CHUNKS
from webapp.services.people_import.reach import fetch_policy
from webapp.services.people_import.source import available_files
from webapp.web.database import in_session
from webapp.web.parsing import path_id
from webapp.web.rendering import render, render_block, wants_json
from webapp.web.requests.forms import FormKey
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.streams import live_stream
from webapp.workflows import imports as imports_workflow

GRID_LIMIT = 2000  # chunk cells drawn on the page; bigger jobs show the counts only
RECENT_ERRORS = 20
PROGRESS_SECONDS = 0.5


class ImportForm(FormModel):
    source: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    count: int = Field(ge=1)
    seed: Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")]
    chunk_size: int = Field(default=500, ge=1, le=5000)
    nat: Annotated[str, StringConstraints(max_length=100, pattern=r"^([A-Za-z]{2}(,[A-Za-z]{2})*)?$")] = ""
    create_users: bool = False
    form_key: FormKey

    @field_validator("nat")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


class JobFilter(FormModel):
    status: ImportStatus | None = None


class RetryForm(FormModel):
    chunk: int | None = Field(default=None, ge=0, lt=MAX_CHUNKS)


def _job_id(request: Request) -> int:
    return path_id(request, "job_id", "import")


# The list and the form -----------------------------------------------------------------------

async def imports_page(request: Request) -> Response:
    """Every import job, newest first, and the form to start one."""
    return await _imports_response(request)


async def _imports_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                            values: dict[str, Any] | None = None, error: str | None = None) -> Response:
    settings = request.app.state.settings
    filters = parse_query(JobFilter, request.query_params)
    status = filters.status.value if filters.status else ""
    rows = await in_session(request, lambda s: jobs.list_jobs(s, status=status))
    if wants_json(request) and status_code >= 400:
        return JSONResponse({"error": error or "Check your input", "fields": errors or {}, "status": status_code},
                            status_code)
    defaults = {"count": "1000", "seed": "gatehouse", "chunk_size": str(settings.import_chunk_size),
                "source": "people-1000.json", "nat": ""}
    values = {**defaults, **(values or {})}
    values["form_key"] = values.get("form_key") or uuid.uuid4().hex
    context = {
        "jobs": [(job, jobs.describe_source(job)) for job in rows], "status": status,
        "statuses": [s.value for s in ImportStatus], "files": available_files(settings.import_files_dir),
        "files_dir": str(settings.import_files_dir), "values": values, "errors": errors or {}, "error": error,
        "max_count": settings.import_max_count,
    }
    return render(request, "admin_import.html", context, block="import_jobs", status_code=status_code)


async def start_import(request: Request) -> Response:
    """Start a job (once per form key) and go to its page."""
    principal = current_principal(request)
    settings = request.app.state.settings
    try:
        form = parse_form(ImportForm, await request.form())
    except FormInvalid as invalid:
        values = {k: v for k, v in invalid.values.items() if k != "form_key" or k not in invalid.errors}
        stale = "The form is out of date; check it and submit it again." if "form_key" in invalid.errors else None
        return await _imports_response(request, status_code=422, errors=invalid.errors, values=values, error=stale)
    values = {k: str(v) for k, v in form.model_dump().items()}
    values["create_users"] = "on" if form.create_users else ""
    if form.count > settings.import_max_count:
        return await _imports_response(request, status_code=422, values=values,
                                       errors={"count": f"At most {settings.import_max_count:,} people."})
    try:
        spec = await in_thread(lambda: jobs.job_spec(
            source_text=form.source, count=form.count, seed=form.seed, chunk_size=form.chunk_size, nat=form.nat,
            create_users=form.create_users, files_dir=settings.import_files_dir,
            preferred_page_size=settings.import_page_size, policy=fetch_policy(settings)))
    except jobs.ImportRefused as refused:
        return await _imports_response(request, status_code=refused.status_code, values=values,
                                       errors={refused.field: str(refused)} if refused.field else None,
                                       error=None if refused.field else str(refused))
    order = NewJob(spec=spec, actor=principal.email, actor_id=principal.id, token_id=principal.token_id,
                   options=imports_workflow.import_options(settings))
    return await _run_and_answer(request, imports_workflow.start_workflow_id(form.form_key), order)


async def _run_and_answer(request: Request, workflow_id: str, order: ImportOrder) -> Response:
    recorded = await in_thread(imports_workflow.start_run, order, workflow_id)  # ImportRefused, NotAnsweredYet
    job_id = recorded["job_id"]
    if wants_json(request):
        return JSONResponse({"id": job_id, "run": recorded["run"], "workflow_id": workflow_id,
                             "url": f"/admin/import/{job_id}"}, 201, headers={"Location": f"/admin/import/{job_id}"})
    return RedirectResponse(f"/admin/import/{job_id}", status_code=303)


# One job -------------------------------------------------------------------------------------------

def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} people/s"


def _time_left(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = round(seconds)
    if seconds < 60:
        return f"about {seconds} s"
    minutes, rest = divmod(seconds, 60)
    return f"about {minutes} min {rest:02d} s" if minutes < 60 else f"about {minutes // 60} h {minutes % 60:02d} min"


async def _progress_context(request: Request, job_id: int) -> dict[str, Any] | None:
    """What the progress section shows; None when there is no such job."""
    view = await in_session(request, lambda s: jobs.progress(s, job_id, now=utcnow(), errors=RECENT_ERRORS))
    if view is None:
        return None
    counts = view.counts
    return {
        "view": view, "job": view.job, "rate": _rate(view.rate), "time_left": _time_left(view.eta_seconds),
        "grid": view.chunks if len(view.chunks) <= GRID_LIMIT else None, "grid_limit": GRID_LIMIT,
        "done": counts.get(ChunkStatus.done, 0), "failed": counts.get(ChunkStatus.failed, 0),
        "in_flight": counts.get(ChunkStatus.queued, 0) + counts.get(ChunkStatus.running, 0),
        "waiting": counts.get(ChunkStatus.pending, 0) + counts.get(ChunkStatus.cancelled, 0),
        "failed_chunks": [c for c in view.chunks if c.status == ChunkStatus.failed][:100],
        "percent": f"{view.done_fraction * 100:.0f}",
    }


async def job_page(request: Request) -> Response:
    """One job: live progress (people imported and failed, a grid of chunks, rate, time
    left), its actions, failed chunks and the latest bad records."""
    job_id = _job_id(request)
    context = await _progress_context(request, job_id)
    if context is None:
        raise HTTPException(404, f"No import with id {job_id}.")
    if wants_json(request):
        return JSONResponse(context["view"].as_json())
    return render(request, "admin_import_job.html", context, block="import_progress")


async def job_events(request: Request) -> Response:
    """The job's progress section as server-sent events: sent again whenever it changes
    (checked every PROGRESS_SECONDS, and at once when the audit feed carries news), then a
    `done` event once the run has ended, which makes the browser close the stream. One
    query per open job page per tick: these are admin pages, a handful at a time."""
    job_id = _job_id(request)
    if await _progress_context(request, job_id) is None:
        raise HTTPException(404, f"No import with id {job_id}.")
    feed = request.app.state.feed
    subscription = feed.subscribe()  # for the shutdown signal and to wake on import events

    async def stream() -> AsyncIterator[ServerSentEvent]:
        sent = None
        try:
            while True:
                context = await _progress_context(request, job_id)
                if context is None:
                    return
                html = render_block(request, "admin_import_job.html", context, "import_progress")
                if html != sent:
                    yield ServerSentEvent(data=html, event="progress")
                    sent = html
                if not context["view"].active:
                    yield ServerSentEvent(data="", event="done")
                    return
                if await _wait_for_news(subscription, PROGRESS_SECONDS) is None:
                    return  # shutting down (the browser reconnects elsewhere) or too slow
        finally:
            feed.unsubscribe(subscription)

    return live_stream(stream(), feed=feed, subscription=subscription)


async def _wait_for_news(subscription: Subscription, seconds: float) -> bool | None:
    """Wait up to `seconds` for audit events (all taken at once); None when the feed ended
    the subscription (shutdown, or dropped for being slow)."""
    try:
        event = await asyncio.wait_for(subscription.queue.get(), seconds)
    except TimeoutError:
        return False
    while event is not None and not subscription.queue.empty():
        event = subscription.queue.get_nowait()
    return None if event is None else True


async def cancel_import(request: Request) -> Response:
    """Stop a running job: chunks in flight finish; queued ones are cancelled."""
    principal = current_principal(request)
    job_id = _job_id(request)
    job = await in_session(request, lambda s: jobs.request_cancel(s, job_id, actor=principal.email,
                                                                    actor_id=principal.id))
    cancelled = await imports_workflow.cancel_waiting_chunks(job_id, job.run)
    if wants_json(request):
        return JSONResponse({"id": job_id, "status": ImportStatus.cancelling.value, "cancelled_chunks": cancelled})
    return RedirectResponse(f"/admin/import/{job_id}", status_code=303)


async def _new_run(request: Request, mode: Literal["resume", "retry"], chunk: int | None = None) -> Response:
    principal = current_principal(request)
    job_id = _job_id(request)
    run = await in_session(request, lambda s: jobs.check_new_run(s, job_id, mode=mode, chunk=chunk))
    order = NewRun(job_id=job_id, run=run, mode=mode, chunk=chunk, actor=principal.email, actor_id=principal.id,
                   token_id=principal.token_id,
                   options=imports_workflow.import_options(request.app.state.settings))
    return await _run_and_answer(request, imports_workflow.run_workflow_id(job_id, run, uuid.uuid4().hex[:12]), order)


async def resume_import(request: Request) -> Response:
    """Start a new run over every chunk not done yet (after a cancel or failures)."""
    return await _new_run(request, "resume")


async def retry_import(request: Request) -> Response:
    """Run the failed chunks again, or only the one named in `chunk`."""
    try:
        form = parse_form(RetryForm, await request.form())
    except FormInvalid as invalid:
        raise HTTPException(422, "; ".join(invalid.errors.values())) from None
    return await _new_run(request, "retry", form.chunk)


routes = [
    guarded_route("/admin/import", imports_page, access=Access.admin),
    guarded_route("/admin/import", start_import, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/import/{job_id:int}", job_page, access=Access.admin),
    guarded_route("/admin/import/{job_id:int}/events", job_events, access=Access.admin),
    guarded_route("/admin/import/{job_id:int}/cancel", cancel_import, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/import/{job_id:int}/resume", resume_import, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/import/{job_id:int}/retry", retry_import, access=Access.admin, methods=["POST"]),
]
