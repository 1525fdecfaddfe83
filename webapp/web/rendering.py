"""One way to answer with HTML: the whole page, or one block of it for htmx.

A page template defines named blocks for its parts; an htmx request (or `?fragment=`)
gets just the block, so one file serves both and fragments work with curl.
"""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from jinja2_fragments.starlette import Jinja2Blocks
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.durations import describe, time_left
from webapp.web.csrf import mask
from webapp.web.flash import clear_flash, pending_flash
from webapp.web.times import browser_zone_name, when, zone

ICONS = "/static/vendor/lucide-1.62.0/icons.svg"  # built by tools/make_icons.py

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "templates"


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_fragment(request: Request) -> bool:
    """htmx asking for a part, or curl's `?fragment=1`. Boosted links and forms want the whole
    page, and so does htmx restoring a pushed URL that fell out of its history cache."""
    whole_page = (request.headers.get("hx-boosted") == "true"
                  or request.headers.get("hx-history-restore-request") == "true")
    return (is_htmx(request) and not whole_page) or bool(request.query_params.get("fragment"))


def wants_stream(request: Request) -> bool:
    """An EventSource (server-sent events) asking."""
    return "text/event-stream" in request.headers.get("accept", "")


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def request_context(request: Request) -> dict[str, Any]:
    """What every template may use: who is signed in, the CSRF token for forms, and the
    message the last form left for this page (webapp.web.flash)."""
    state = request.scope.get("state", {})
    if "csrf_masked" not in state:  # one mask per response (a stream is one response)
        state["csrf_masked"] = mask(state["csrf_token"]) if state.get("csrf_token") else ""
    principal = state.get("principal")
    return {"principal": principal, "csrf_token": state["csrf_masked"], "header_pending_count": state.get("pending_count"),
            "flash": pending_flash(request) if "app" in request.scope else None,
            "viewer_tz": zone((principal.time_zone if principal else "") or browser_zone_name(request.cookies))}


@pass_context
def _when(context: Context, moment: datetime | None, style: str = "relative", empty: str = "—") -> Markup:
    """`{{ when(row.created_at) }}`: a <time> in the viewer's zone (webapp.web.times)."""
    return when(moment, context.get("viewer_tz") or zone(None), style=style, empty=empty)


def icon(name: str) -> Markup:
    """A Lucide icon from the vendored sprite; decoration only (the text beside it says it all)."""
    return Markup('<svg class="icon" aria-hidden="true" focusable="false"><use href="{}#{}"></use></svg>').format(
        ICONS, name)


def create_templates() -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=str(TEMPLATE_DIR), context_processors=[request_context])
    templates.env.autoescape = True
    templates.env.filters["duration"] = describe
    templates.env.filters["time_left"] = time_left
    templates.env.globals.update(when=_when, icon=icon)
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
    # Templates are read once per process: checking each file's time at every render cost a
    # stat call per template per page, and per stream on the live feed (restart to see edits).
    templates.env.auto_reload = False
    return templates


def render(
    request: Request,
    name: str,
    context: dict[str, Any] | None = None,
    *,
    block: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    fragment_only: bool = False,
) -> Response:
    """Render `name`; for htmx requests (or `?fragment=1`, or `fragment_only`) render only `block`."""
    templates: Jinja2Blocks = request.app.state.templates
    fragment = block if block and (fragment_only or wants_fragment(request)) else None
    response = templates.TemplateResponse(
        request,
        name,
        context or {},
        status_code=status_code,
        headers=headers,
        **({"block_name": fragment} if fragment else {}),
    )
    if block:
        response.headers.append("Vary", "HX-Request")
    if fragment is None:
        clear_flash(request, response)  # a whole page shows it (base.html)
    return response


def render_block(request: Request, name: str, context: dict[str, Any], block: str) -> str:
    """One block of `name` as text, for HTML sent outside a response (server-sent events)."""
    return bytes(render(request, name, context, block=block, fragment_only=True).body).decode().strip()


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class DataJSONResponse(JSONResponse):
    """JSON in which datetimes are ISO 8601 strings and dataclasses are objects, so the rows a
    page renders are its JSON answer as they stand (otherwise as Starlette's JSONResponse)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":"),
                          default=_json_value).encode("utf-8")
