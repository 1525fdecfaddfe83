"""One request: its page, and deciding, cancelling or revoking it.

Each action hands the decision to the request's workflow (webapp.workflows.access), which
is the authority; a refusal (AccessError, NotAnsweredYet) answers through
webapp.web.errors.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.forms import FormModel, parse_form, safe_next
from webapp.core.models import utcnow
from webapp.services.access import DecisionKind, DecisionOutcome, request_view
from webapp.services.request_table import request_url
from webapp.services.timeline import story
from webapp.web.database import in_session
from webapp.web.flash import redirect_with
from webapp.web.parsing import path_id
from webapp.web.rendering import render, wants_json
from webapp.web.requests.forms import DecisionForm, RejectForm, RevokeForm
from webapp.web.security import current_principal
from webapp.workflows import access as access_workflow


async def request_page(request: Request) -> Response:
    """One request: its state, approvals, grant and history, with the actions this viewer may take."""
    principal = current_principal(request)
    request_id = path_id(request, "request_id")
    view = await in_session(request, lambda s: request_view(s, principal, request_id))
    if wants_json(request):
        r = view.request
        return JSONResponse({
            "id": r.id, "status": r.status, "requester": view.requester.email, "resource": view.resource.name,
            "reason": r.reason, "duration_seconds": r.duration_seconds, "workflow_id": r.workflow_id,
            "created_at": r.created_at.isoformat(), "error": r.error,
            "approvals": [{"approver": a.approver, "decision": a.decision, "counted": a.counted} for a in view.approvals],
            "grant": None if view.grant is None else {
                "id": view.grant.id, "state": view.grant.state,
                "expires_at": view.grant.expires_at.isoformat() if view.grant.expires_at else None,
                "revoked_at": view.grant.revoked_at.isoformat() if view.grant.revoked_at else None,
                "tasks": [{"id": t.task.id, "action": t.task.action, "status": t.task.status,
                           "url": f"/tasks/{t.task.id}"} for t in view.tasks]},
        })
    return render(request, "request_detail.html", {"view": view, "now": utcnow(), "story": story(view.history)},
                  block="request_detail")


def decided_text(kind: DecisionKind, request_id: int, outcome: DecisionOutcome) -> str:
    """What a decision did, in the words of the message the next page shows."""
    if kind == "approve" and outcome["status"] == "requested":
        return (f"Your approval of request #{request_id} counted: {outcome['approvals']} of "
                f"{outcome['required']} needed.")
    return {"approve": f"Request #{request_id} approved.", "reject": f"Request #{request_id} rejected.",
            "cancel": f"Request #{request_id} cancelled."}[kind]


LISTS = ("/", "/approvals", "/requests", "/my/requests")  # pages whose rows carry the decision forms


def came_from(request: Request, default: str) -> str:
    """The list the form was on (from Referer: the rows are shared by every list, live, so they
    cannot say which page they are on), or `default`."""
    referer = urlsplit(request.headers.get("referer", ""))
    if referer.netloc == request.url.netloc and referer.path in LISTS:
        return safe_next(referer.path + (f"?{referer.query}" if referer.query else ""), default)
    return default


async def _decide(request: Request, kind: DecisionKind, form_model: type[FormModel]) -> Response:
    """Decide, then go back to the list the form was on, or to the request, with a message
    saying what happened."""
    principal = current_principal(request)
    request_id = path_id(request, "request_id")
    form = parse_form(form_model, await request.form())  # FormInvalid: a 422 (webapp.web.errors)
    result = await access_workflow.decide(request.app.state.db, principal, request_id, kind,
                                          getattr(form, "comment", ""))
    if wants_json(request):
        return JSONResponse({"id": request_id, **result})
    return redirect_with(request, came_from(request, request_url(request_id)), decided_text(kind, request_id, result),
                         link=(request_url(request_id), f"Open request #{request_id}"))


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
    grant_id = path_id(request, "grant_id")
    form = parse_form(RevokeForm, await request.form())
    request_id = await access_workflow.revoke(request.app.state.db, principal, grant_id, form.note)
    if wants_json(request):
        return JSONResponse({"grant_id": grant_id, "revoked": True})
    return redirect_with(request, request_url(request_id) if request_id else "/my/access",
                         f"Access ended (grant #{grant_id}); its removal from the system is under way.")
