"""`/notifications`: the built-in outbox, for admins."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints
from starlette.requests import Request
from starlette.responses import Response

from webapp.core.forms import FormModel, parse_query
from webapp.services.notifications import outbox
from webapp.web.database import in_session
from webapp.web.rendering import render


class NotificationFilter(FormModel):
    channel: Annotated[str, StringConstraints(max_length=16)] = ""
    status: Annotated[str, StringConstraints(max_length=16)] = ""


async def notifications_page(request: Request) -> Response:
    """The built-in outbox: every message on every channel, with its delivery status."""
    filters = parse_query(NotificationFilter, request.query_params)
    rows = await in_session(request, lambda s: outbox(s, channel=filters.channel, status=filters.status))
    return render(request, "notifications.html", {"rows": rows, "filters": filters}, block="notifications")
