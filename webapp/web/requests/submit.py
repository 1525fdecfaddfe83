"""Asking for access: the request form, and sending it.

Sending starts the request's workflow once per form key and waits until it recorded the
request (webapp.workflows.access.submit); the page then goes to the request.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.durations import DURATIONS, LABELS
from webapp.core.forms import FormInvalid, parse_form, plain_int
from webapp.core.models import Resource, utcnow
from webapp.core.ratelimit import SlidingWindowLimiter
from webapp.services.access import AccessError
from webapp.services.request_form import Extending, prefill
from webapp.services.request_table import request_url
from webapp.services.resource_picker import ResourceCard, resource_cards
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
    """The request form; each rendering carries a fresh key, so one form submits once. It opens
    with a resource chosen (`resource_id`), extending a grant (`extend`), or as a copy of an
    earlier request (`again`)."""
    principal = current_principal(request)
    query = {name: plain_int(request.query_params.get(name), max_digits=9) for name in ("resource_id", "extend", "again")}
    start = await in_session(request, lambda s: prefill(s, principal.id, resource_id=query["resource_id"],
                                                        extend=query["extend"], again=query["again"]))
    return await _form_response(request, values=start.values, q=search_text(request))


def search_text(request: Request) -> str:
    """The picker's search (`q`): up to 100 printable characters; anything else searches for nothing."""
    q = request.query_params.get("q", "").strip()
    return q if len(q) <= 100 and q.isprintable() else ""


async def _form_response(request: Request, *, values: dict[str, Any], errors: dict[str, str] | None = None,
                         status_code: int = 200, error: str | None = None,
                         headers: dict[str, str] | None = None, q: str = "") -> Response:
    if wants_json(request) and status_code >= 400:
        return error_response(request, status_code, error or "Check your input", headers, fields=errors or {})
    principal = current_principal(request)
    extend = plain_int(str(values.get("extends_grant_id") or ""), max_digits=9)

    def load(session: Session) -> dict[str, Any]:
        return {"suggestions": suggestions_for(session, principal.id, now=utcnow()),
                "cards": resource_cards(session, principal.id, q=q),
                "extending": prefill(session, principal.id, extend=extend).extending if extend else None}

    loaded = await in_session(request, load)
    # This page shows the picker (each resource's details and what the person has of it), not the list.
    context = request_form_context([], values=values, errors=errors, error=error, suggestions=loaded["suggestions"],
                                   extending=loaded["extending"], cards=loaded["cards"], q=q)
    return render(request, "request_new.html", context, block="request_form", status_code=status_code,
                  headers=headers)


def request_form_context(resources: list[Resource], *, values: dict[str, Any], errors: dict[str, str] | None = None,
                         error: str | None = None, suggestions: list[Suggestion] | None = None,
                         extending: Extending | None = None, cards: list[ResourceCard] | None = None,
                         q: str = "") -> dict[str, Any]:
    """What templates/_request_form.html needs, wherever the form is shown; `suggestions`
    (webapp.services.suggestions) are links that preselect a resource; `extending`, the grant
    an extension form extends. With `cards` (and their search `q`) the form shows the picker
    instead of the compact list of `resources` (the dashboard's)."""
    values = {**values, "form_key": values.get("form_key") or uuid.uuid4().hex}
    durations = [(k, LABELS[k]) for k in DURATIONS if not (extending and DURATIONS[k] is None)]
    return {"resources": resources, "durations": durations, "values": values, "errors": errors or {}, "error": error,
            "suggestions": suggestions or [], "extending": extending, "cards": cards, "q": q}


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
                                                 reason=form.reason, form_key=form.form_key,
                                                 extends_grant_id=form.extends_grant_id)
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
