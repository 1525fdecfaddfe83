"""The home page."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from webapp.models import utcnow
from webapp.overview import Overview, load_overview
from webapp.web.rendering import render
from webapp.web.security import Access, guarded_route


def _overview(request: Request) -> Overview:
    with request.app.state.db.session() as session:
        return load_overview(session, now=utcnow())


async def home(request: Request) -> Response:
    overview = await run_in_threadpool(_overview, request)
    return render(request, "home.html", {"overview": overview}, block="overview")


routes = [guarded_route("/", home, access=Access.member)]
