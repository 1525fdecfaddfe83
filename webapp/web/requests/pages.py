"""Request pages: ask for access, follow a request, decide, cancel, revoke, the table of
all requests one may see, the personal lists (my requests, waiting for my approval, my
access) plus the outbox.

Submitting starts the request's workflow under an id derived from the form's key and
waits for the workflow to say it recorded the request; deciding sends the workflow a
message and waits for it to say what the message did. The workflow is the authority;
the checks here only answer early and clearly.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from dbos import DBOS
from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.services import access as service
from webapp.core.durations import DURATIONS, LABELS
from webapp.core.forms import FormInvalid, FormModel, parse_form, parse_query
from webapp.core.models import Notification, Resource, utcnow
from webapp.core.ratelimit import SlidingWindowLimiter
from webapp.services.request_table import RequestQuery, RequestTable, load_table, resource_choices
from webapp.workflows.runtime import start_workflow
from webapp.services.suggestions import Suggestion, suggestions_for
from webapp.web.errors import error_response
from webapp.web.rendering import is_htmx, render, wants_json
from webapp.web.requests.table import table_json, table_view
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.database import in_session
from webapp.workflows.access import (
    DECISION_TOPIC,
    RECORDED_EVENT,
    access_request_workflow,
    message_event,
    request_workflow_id,
    revoke_grant_workflow,
)

WORKFLOW_ANSWER_SECONDS = 10.0


class RequestForm(FormModel):
    resource_id: int = Field(ge=1, le=2**31 - 1)
    duration: str = Field(json_schema_extra={"enum": list(DURATIONS)})  # checked against the resource
    reason: Annotated[str, StringConstraints(min_length=10, max_length=1000)]
    form_key: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{8,64}$")]


class DecisionForm(FormModel):
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""


class RejectForm(FormModel):
    comment: Annotated[str, StringConstraints(min_length=3, max_length=1000)]


class RevokeForm(FormModel):
    note: Annotated[str, StringConstraints(max_length=500)] = ""


class NotificationFilter(FormModel):
    channel: Annotated[str, StringConstraints(max_length=16)] = ""
    status: Annotated[str, StringConstraints(max_length=16)] = ""


def _access_error(error: service.AccessError) -> HTTPException:
    return HTTPException(error.status_code, str(error))


def submission_limiter(request: Request) -> SlidingWindowLimiter:
    state = request.app.state
    if not hasattr(state, "submission_limiter"):
        settings = state.settings
        state.submission_limiter = SlidingWindowLimiter(settings.submit_rate_limit, settings.submit_rate_period)
    return state.submission_limiter  # type: ignore[no-any-return]


# Asking ------------------------------------------------------------------------------------

async def new_request_page(request: Request) -> Response:
    """The request form; each rendering carries a fresh key, so one form submits once."""
    preselect = request.query_params.get("resource_id", "")
    return await _form_response(request, values={"resource_id": preselect if preselect.isdigit() else "",
                                                 "duration": "8h"})


async def _form_response(request: Request, *, values: dict[str, Any], errors: dict[str, str] | None = None,
                         status_code: int = 200, error: str | None = None,
                         headers: dict[str, str] | None = None) -> Response:
    if wants_json(request) and status_code >= 400:
        return error_response(request, status_code, error or "Check your input", headers, fields=errors or {})
    principal = current_principal(request)
    resources, suggestions = await in_session(request, lambda s: (
        service.requestable_resources(s), suggestions_for(s, principal.id, now=utcnow())))
    context = request_form_context(resources, values=values, errors=errors, error=error, suggestions=suggestions)
    return render(request, "request_new.html", context, block="request_form", status_code=status_code,
                  headers=headers)


def request_form_context(resources: list[Resource], *, values: dict[str, Any], errors: dict[str, str] | None = None,
                         error: str | None = None, suggestions: list[Suggestion] | None = None) -> dict[str, Any]:
    """What templates/_request_form.html needs, wherever the form is shown; `suggestions`
    (webapp.services.suggestions) are links that preselect a resource."""
    values = {**values, "form_key": values.get("form_key") or uuid.uuid4().hex}
    return {"resources": resources, "durations": [(k, LABELS[k]) for k in DURATIONS], "values": values,
            "errors": errors or {}, "error": error, "suggestions": suggestions or []}


async def submit_request(request: Request) -> Response:
    """Start the request's workflow (once per form key) and go to the request's page."""
    principal = current_principal(request)
    raw = await request.form()
    try:
        form = parse_form(RequestForm, raw)
    except FormInvalid as invalid:
        return await _form_response(request, values=invalid.values, errors=invalid.errors, status_code=422)
    values = form.model_dump()
    workflow_id = request_workflow_id(principal.id, form.form_key)

    existing = await in_session(request, lambda s: service.request_id_for_workflow(s, workflow_id))
    if existing is not None:  # the same form sent twice: show the one request it made
        return _created(request, existing, workflow_id)
    retry_after = submission_limiter(request).hit(f"user:{principal.id}")
    if retry_after is not None:
        return await _form_response(request, values=values, status_code=429,
                                    error=f"You are sending requests too fast. Try again in {retry_after} s.",
                                    headers={"Retry-After": str(retry_after)})
    try:
        submission = await in_session(request, lambda s: service.prepare_submission(
            s, request.app.state.settings, principal, resource_id=form.resource_id, duration=form.duration, reason=form.reason))
    except service.AccessError as refused:
        # A resent form whose workflow recorded the request in the meantime is not a duplicate.
        recorded = await in_session(request, lambda s: service.request_id_for_workflow(s, workflow_id))
        if recorded is not None:
            return _created(request, recorded, workflow_id)
        return await _form_response(request, values=values, status_code=refused.status_code,
                                    errors={refused.field: str(refused)} if refused.field else None,
                                    error=None if refused.field else str(refused))
    await start_workflow(workflow_id, access_request_workflow, submission)
    recorded = await DBOS.get_event_async(workflow_id, RECORDED_EVENT, timeout_seconds=WORKFLOW_ANSWER_SECONDS)
    if recorded is None:
        raise HTTPException(503, "The request was accepted but is not recorded yet; see My requests shortly.")
    if "refused" in recorded:
        return await _form_response(request, values=values, status_code=422,
                                    errors={"resource_id": recorded["refused"]})
    return _created(request, recorded["request_id"], workflow_id)


def _created(request: Request, request_id: int, workflow_id: str) -> Response:
    url = f"/requests/{request_id}"
    if wants_json(request):
        return JSONResponse({"id": request_id, "workflow_id": workflow_id, "url": url}, 201, headers={"Location": url})
    if is_htmx(request):
        # XHR would follow a 303 silently and leave the address on the form: navigate instead.
        return Response(status_code=204, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


# Following and deciding --------------------------------------------------------------------

def _path_id(request: Request, name: str) -> int:
    value = request.path_params[name]
    if not 0 < value < 2**31:
        raise HTTPException(404, "No such record.")
    return int(value)


async def request_page(request: Request) -> Response:
    """One request: its state, approvals, grant and history, with the actions this viewer may take."""
    principal = current_principal(request)
    request_id = _path_id(request, "request_id")
    try:
        view = await in_session(request, lambda s: service.request_view(s, principal, request_id))
    except service.AccessError as error:
        raise _access_error(error) from None
    if wants_json(request):
        r = view.request
        return JSONResponse({
            "id": r.id, "status": r.status, "requester": view.requester.email, "resource": view.resource.name,
            "reason": r.reason, "duration_seconds": r.duration_seconds, "workflow_id": r.workflow_id,
            "created_at": r.created_at.isoformat(), "error": r.error,
            "approvals": [{"approver": a.approver, "decision": a.decision, "counted": a.counted} for a in view.approvals],
            "grant": None if view.grant is None else {
                "id": view.grant.id, "expires_at": view.grant.expires_at.isoformat() if view.grant.expires_at else None,
                "revoked_at": view.grant.revoked_at.isoformat() if view.grant.revoked_at else None},
        })
    return render(request, "request_detail.html", {"view": view, "now": utcnow()}, block="request_detail")


async def _decide(request: Request, kind: str, form_model: type[FormModel]) -> Response:
    principal = current_principal(request)
    request_id = _path_id(request, "request_id")
    form = parse_form(form_model, await request.form())  # FormInvalid: a 422 (webapp.web.errors)
    try:
        workflow_id = await in_session(request, lambda s: service.check_decision(s, principal, request_id, kind))
    except service.AccessError as error:
        raise _access_error(error) from None
    message = {"id": uuid.uuid4().hex, "kind": kind, "actor_id": principal.id,
               "comment": getattr(form, "comment", "")}
    await DBOS.send_async(workflow_id, message, DECISION_TOPIC, idempotency_key=message["id"])
    result = await DBOS.get_event_async(workflow_id, message_event(message["id"]),
                                        timeout_seconds=WORKFLOW_ANSWER_SECONDS)
    if result is None:
        raise HTTPException(503, "Your decision was sent but not applied yet; reload the page shortly.")
    if not result["applied"]:
        raise HTTPException(409, f"Nothing changed: {result['note']}.")
    if wants_json(request):
        return JSONResponse({"id": request_id, **result})
    return RedirectResponse(f"/requests/{request_id}", status_code=303)


async def approve(request: Request) -> Response:
    """Approve (counts once per approver; the request is approved at the resource's threshold)."""
    return await _decide(request, "approve", DecisionForm)


async def reject(request: Request) -> Response:
    """Reject with a reason; one rejection ends the request."""
    return await _decide(request, "reject", RejectForm)


async def cancel(request: Request) -> Response:
    """The requester withdraws a pending request."""
    return await _decide(request, "cancel", DecisionForm)


async def revoke_grant(request: Request) -> Response:
    """End an active grant now; the holder is told and the request's workflow wakes up."""
    principal = current_principal(request)
    grant_id = _path_id(request, "grant_id")
    form = parse_form(RevokeForm, await request.form())
    try:
        target = await in_session(request, lambda s: service.check_revoke(s, grant_id))
    except service.AccessError as error:
        raise _access_error(error) from None
    sleeper = target["access_workflow_id"]
    if sleeper and await DBOS.get_workflow_status_async(sleeper) is None:
        sleeper = None  # imported history (the demo seed) has no workflow to wake
    handle = await start_workflow(f"revoke-grant-{grant_id}", revoke_grant_workflow, grant_id, principal.id,
                                  form.note, sleeper, target["facts"])
    await run_in_threadpool(handle.get_result)
    request_id = target["facts"]["request_id"]
    if wants_json(request):
        return JSONResponse({"grant_id": grant_id, "revoked": True})
    return RedirectResponse(f"/requests/{request_id}" if request_id else "/my/access", status_code=303)


# Lists -----------------------------------------------------------------------------------------

async def requests_page(request: Request) -> Response:
    """Every request this viewer may see: filtered, sorted and paged by the query string."""
    principal = current_principal(request)
    query = parse_query(RequestQuery, request.query_params)

    def load(session: Session) -> tuple[RequestTable, list[tuple[int, str]]]:
        return load_table(session, service.viewer(session, principal), query), resource_choices(session)

    table, resources = await in_session(request, load)
    view = table_view(table, resources=resources)
    if wants_json(request):
        return JSONResponse(table_json(view))
    return render(request, "requests.html", {"view": view}, block="requests_table")


async def my_requests_page(request: Request) -> Response:
    """Everything I asked for, newest first."""
    principal = current_principal(request)
    rows = await in_session(request, lambda s: service.my_requests(s, principal.id))
    return _list_response(request, "my_requests.html", "my_requests", rows)


async def approvals_page(request: Request) -> Response:
    """Pending requests I may decide, oldest first."""
    principal = current_principal(request)
    rows = await in_session(request, lambda s: service.waiting_for(s, principal))
    return _list_response(request, "approvals.html", "approvals", rows)


async def my_access_page(request: Request) -> Response:
    """What I hold now, and for how long."""
    principal = current_principal(request)
    now = utcnow()
    rows = await in_session(request, lambda s: service.my_access(s, principal.id, now=now))
    if wants_json(request):
        return JSONResponse([{"grant_id": r.grant_id, "request_id": r.request_id, "resource": r.resource,
                              "expires_at": r.expires_at.isoformat() if r.expires_at else None} for r in rows])
    return render(request, "my_access.html", {"rows": rows, "now": now}, block="my_access")


def _list_response(request: Request, template: str, block: str, rows: list[service.RequestRow]) -> Response:
    if wants_json(request):
        return JSONResponse([{"id": r.id, "requester": r.requester, "resource": r.resource, "status": r.status,
                              "duration": r.duration, "created_at": r.created_at.isoformat()} for r in rows])
    return render(request, template, {"rows": rows}, block=block)


async def notifications_page(request: Request) -> Response:
    """The built-in outbox: every message on every channel, with its delivery status."""
    filters = parse_query(NotificationFilter, request.query_params)

    def load(session: Session) -> list[Notification]:
        query = sa.select(Notification).order_by(Notification.id.desc()).limit(200)  # type: ignore[union-attr]
        if filters.channel:
            query = query.where(Notification.channel == filters.channel)
        if filters.status:
            query = query.where(Notification.status == filters.status)
        return list(session.scalars(query).all())

    rows = await in_session(request, load)
    return render(request, "notifications.html", {"rows": rows, "filters": filters}, block="notifications")


routes = [
    guarded_route("/requests/new", new_request_page, access=Access.member),
    guarded_route("/requests", requests_page, access=Access.member),
    guarded_route("/requests", submit_request, access=Access.member, methods=["POST"]),
    guarded_route("/requests/{request_id:int}", request_page, access=Access.member),
    guarded_route("/requests/{request_id:int}/approve", approve, access=Access.approver, methods=["POST"]),
    guarded_route("/requests/{request_id:int}/reject", reject, access=Access.approver, methods=["POST"]),
    guarded_route("/requests/{request_id:int}/cancel", cancel, access=Access.member, methods=["POST"]),
    guarded_route("/grants/{grant_id:int}/revoke", revoke_grant, access=Access.admin, methods=["POST"]),
    guarded_route("/my/requests", my_requests_page, access=Access.member),
    guarded_route("/my/access", my_access_page, access=Access.member),
    guarded_route("/approvals", approvals_page, access=Access.approver),
    guarded_route("/notifications", notifications_page, access=Access.admin),
]
