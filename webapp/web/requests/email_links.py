"""The page an emailed approve or reject link opens, and the decision it posts.

GET shows the request and asks to confirm (it changes nothing: mail scanners open links);
POST decides, through the same workflow path as the web, recorded as channel "email" and
spending the link. Both need the signed-in approver the link was sent to: a signed-out
visitor is sent to sign in and comes back here. The rules: webapp.services.decision_links.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.forms import parse_form
from webapp.core.models import utcnow
from webapp.services.access import RequestView, request_view
from webapp.services.decision_links import PATH, DecisionLink, check_link, read_link
from webapp.services.request_table import request_url
from webapp.web.flash import redirect_with
from webapp.web.rendering import render, wants_json
from webapp.web.requests.decide import decided_text
from webapp.web.requests.forms import DecisionForm, RejectForm
from webapp.web.security import current_principal
from webapp.workflows import access as access_workflow


async def _may_use(request: Request, link: DecisionLink) -> None:
    """AccessError unless this person may decide with `link` now: 403, 409, 410."""
    principal = current_principal(request)
    await request.app.state.db.in_session(lambda s: check_link(s, link, principal, now=utcnow()))


def _link(request: Request) -> DecisionLink:
    """The link in the path (AccessError 404 unless we signed it)."""
    return read_link(request.app.state.settings.session_secret, request.path_params["token"])


async def link_page(request: Request) -> Response:
    """What the link would decide, with the form that decides it."""
    link = _link(request)
    principal = current_principal(request)

    def usable_view(session: Session) -> RequestView:
        check_link(session, link, principal, now=utcnow())
        return request_view(session, principal, link.request_id)

    view = await request.app.state.db.in_session(usable_view)  # one session: the check and what it shows
    return render(request, "decision_link.html", {"link": link, "view": view,
                                                  "action": PATH + request.path_params["token"]})


async def decide_by_link(request: Request) -> Response:
    """Decide as the link says, once."""
    link = _link(request)
    form = parse_form(DecisionForm if link.decision == "approve" else RejectForm, await request.form())
    await _may_use(request, link)
    result = await access_workflow.decide(request.app.state.db, current_principal(request), link.request_id,
                                          link.decision, form.comment, via="email", link_id=link.link_id)
    if wants_json(request):
        return JSONResponse({"id": link.request_id, **result})
    return redirect_with(request, request_url(link.request_id), decided_text(link.decision, link.request_id, result))
