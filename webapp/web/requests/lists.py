"""The lists of requests: the requests table, My requests, Waiting for my approval, My access.

Every list is a page, a fragment (htmx) and JSON, and every request in it is a
`RequestRow` (webapp.services.request_table), the same shape the live feed sends.
"""

from __future__ import annotations

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.forms import parse_query
from webapp.core.models import utcnow
from webapp.services.access import viewer
from webapp.services.extensions import pending_extensions
from webapp.services.grants import AccessRow, my_access
from webapp.services.request_table import (
    RequestQuery,
    RequestRow,
    RequestTable,
    count_waiting,
    load_table,
    my_requests,
    resource_choices,
    waiting_for,
)
from webapp.web.database import in_session
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.requests.table import table_json, table_view
from webapp.web.security import current_principal


async def requests_page(request: Request) -> Response:
    """Every request this viewer may see: filtered, sorted and paged by the query string."""
    principal = current_principal(request)
    query = parse_query(RequestQuery, request.query_params)

    def load(session: Session) -> tuple[RequestTable, list[tuple[int, str]]]:
        return load_table(session, viewer(session, principal), query), resource_choices(session)

    table, resources = await in_session(request, load)
    view = table_view(table, resources=resources)
    if wants_json(request):
        return DataJSONResponse(table_json(view))
    return render(request, "requests.html", {"view": view}, block="requests_table")


async def my_requests_page(request: Request) -> Response:
    """Everything I asked for, newest first."""
    principal = current_principal(request)
    rows = await in_session(request, lambda s: my_requests(s, viewer(s, principal)))
    return _list_response(request, "my_requests.html", "my_requests", rows)


async def approvals_page(request: Request) -> Response:
    """Pending requests I may decide, oldest first."""
    principal = current_principal(request)
    rows = await in_session(request, lambda s: waiting_for(s, viewer(s, principal)))
    return _list_response(request, "approvals.html", "approvals", rows)


async def pending_count(request: Request) -> Response:
    """How many requests wait for my decision: the count beside "Waiting for me", which fetches
    itself again when the live feed says the queue moved."""
    principal = current_principal(request)
    count = await in_session(request, lambda s: count_waiting(s, viewer(s, principal)))
    if wants_json(request):
        return JSONResponse({"waiting": count})
    return render(request, "pending_count.html", {"pending_count": count}, block="badge", fragment_only=True)


async def my_access_page(request: Request) -> Response:
    """What I hold now, and for how long."""
    principal = current_principal(request)
    now = utcnow()

    def load(session: Session) -> tuple[list[AccessRow], dict[int, int]]:
        held = my_access(session, principal.id, now=now)
        return held, pending_extensions(session, [row.grant_id for row in held])

    rows, extensions = await in_session(request, load)
    if wants_json(request):
        return JSONResponse([{"grant_id": r.grant_id, "request_id": r.request_id, "resource": r.resource,
                              "expires_at": r.expires_at.isoformat() if r.expires_at else None} for r in rows])
    return render(request, "my_access.html", {"rows": rows, "now": now, "extensions": extensions}, block="my_access")


def _list_response(request: Request, template: str, block: str, rows: list[RequestRow]) -> Response:
    if wants_json(request):
        return DataJSONResponse(rows)
    return render(request, template, {"rows": rows}, block=block)
