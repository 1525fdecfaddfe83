"""Asking for access: the request form, and sending it.

Sending starts the request's workflow once per form key and waits until it recorded the
request (webapp.workflows.access.submit); the page then goes to the request.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.durations import DURATIONS, LABELS
from webapp.core.forms import FormInvalid, parse_form, plain_int
from webapp.core.models import Resource, utcnow
from webapp.core.ratelimit import SlidingWindowLimiter
from webapp.services.access import AccessError, requestable_resources
from webapp.services.request_table import request_url
from webapp.services.suggestions import Suggestion, suggestions_for
from webapp.web.database import in_session
from webapp.web.errors import error_response
from webapp.web.flash import leave_flash, redirect_with
from webapp.web.rendering import is_htmx, render, wants_json
from webapp.web.requests.forms import RequestForm
from webapp.web.security import current_principal
from webapp.workflows import access as access_workflow


def submission_limiter(request: Request) -> SlidingWindowLimiter:
    state = request.app.state
    if not hasattr(state, "submission_limiter"):
        settings = state.settings
        state.submission_limiter = SlidingWindowLimiter(settings.submit_rate_limit, settings.submit_rate_period)
    return state.submission_limiter  # type: ignore[no-any-return]


async def new_request_page(request: Request) -> Response:
    """The request form; each rendering carries a fresh key, so one form submits once."""
    preselect = request.query_params.get("resource_id", "")
    return await _form_response(request, values={"resource_id": preselect if plain_int(preselect) else "",
                                                 "duration": "8h"})


async def _form_response(request: Request, *, values: dict[str, Any], errors: dict[str, str] | None = None,
                         status_code: int = 200, error: str | None = None,
                         headers: dict[str, str] | None = None) -> Response:
    if wants_json(request) and status_code >= 400:
        return error_response(request, status_code, error or "Check your input", headers, fields=errors or {})
    principal = current_principal(request)
    resources, suggestions = await in_session(request, lambda s: (
        requestable_resources(s), suggestions_for(s, principal.id, now=utcnow())))
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
    try:
        form = parse_form(RequestForm, await request.form())
    except FormInvalid as invalid:
        return await _form_response(request, values=invalid.values, errors=invalid.errors, status_code=422)
    values = form.model_dump()
    database = request.app.state.db
    again = await access_workflow.find_submission(database, principal.id, form.form_key)
    if again is not None:  # the same form sent twice: show the one request it made
        return _created(request, again)
    retry_after = submission_limiter(request).hit(f"user:{principal.id}")
    if retry_after is not None:
        return await _form_response(request, values=values, status_code=429,
                                    error=f"You are sending requests too fast. Try again in {retry_after} s.",
                                    headers={"Retry-After": str(retry_after)})
    try:
        submitted = await access_workflow.submit(database, request.app.state.settings, principal,
                                                 resource_id=form.resource_id, duration=form.duration,
                                                 reason=form.reason, form_key=form.form_key)
    except AccessError as refused:
        return await _form_response(request, values=values, status_code=refused.status_code,
                                    errors={refused.field: str(refused)} if refused.field else None,
                                    error=None if refused.field else str(refused))
    return _created(request, submitted)


def _created(request: Request, submitted: access_workflow.Submitted) -> Response:
    url = request_url(submitted.request_id)
    if wants_json(request):
        return JSONResponse({"id": submitted.request_id, "workflow_id": submitted.workflow_id, "url": url}, 201,
                            headers={"Location": url})
    text = f"Request #{submitted.request_id} sent. This page shows its progress as it happens."
    if is_htmx(request):
        # XHR would follow a 303 silently and leave the address on the form: navigate instead.
        return leave_flash(request, Response(status_code=204, headers={"HX-Redirect": url}), text)
    return redirect_with(request, url, text)
