"""The dashboard: counters, the first page of the requests table, and the request form.

Each part is also a fragment on its own: the counters at /dashboard/counters, the table
at /requests (with HX-Request or `?fragment=1`), so a part can be refreshed alone.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.models import utcnow
from webapp.services.access import requestable_resources, viewer
from webapp.services.overview import load_counters
from webapp.services.request_table import RequestQuery, load_table
from webapp.services.suggestions import suggestions_for
from webapp.web.database import in_session
from webapp.web.rendering import render, wants_json
from webapp.web.requests.submit import request_form_context
from webapp.web.requests.table import table_view
from webapp.web.security import Access, current_principal, guarded_route


async def home(request: Request) -> Response:
    principal = current_principal(request)

    def load(session: Session) -> dict[str, Any]:
        seen_by = viewer(session, principal)
        return {"counters": load_counters(session, seen_by, now=utcnow()),
                "view": table_view(load_table(session, seen_by, RequestQuery()), swap=False),
                **request_form_context(requestable_resources(session), values={"duration": "8h"},
                                       suggestions=suggestions_for(session, principal.id, now=utcnow()))}

    return render(request, "home.html", await in_session(request, load), block="overview")


async def counters_fragment(request: Request) -> Response:
    """The counters alone, so that part of the dashboard can be refreshed by itself."""
    principal = current_principal(request)
    counters = await in_session(request, lambda s: load_counters(s, viewer(s, principal), now=utcnow()))
    if wants_json(request):
        return JSONResponse(counters.as_dict())
    return render(request, "home.html", {"counters": counters}, block="counters", fragment_only=True)


routes = [
    guarded_route("/", home, access=Access.member),
    guarded_route("/dashboard/counters", counters_fragment, access=Access.member),
]
