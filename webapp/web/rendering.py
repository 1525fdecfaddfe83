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

from jinja2_fragments.starlette import Jinja2Blocks
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.durations import describe, time_left
from webapp.web.csrf import mask
from webapp.web.flash import clear_flash, pending_flash

TEMPLATE_DIR = Path(__file__).resolve().parent.parent.parent / "templates"


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def wants_fragment(request: Request) -> bool:
    """htmx asking for a part, or curl's `?fragment=1`. Boosted links and forms want the whole
    page, and so does htmx restoring a pushed URL that fell out of its history cache."""
    whole_page = (request.headers.get("hx-boosted") == "true"
                  or request.headers.get("hx-history-restore-request") == "true")
    return (is_htmx(request) and not whole_page) or bool(request.query_params.get("fragment"))


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def request_context(request: Request) -> dict[str, Any]:
    """What every template may use: who is signed in, the CSRF token for forms, and the
    message the last form left for this page (webapp.web.flash)."""
    state = request.scope.get("state", {})
    if "csrf_masked" not in state:  # one mask per response (a stream is one response)
        state["csrf_masked"] = mask(state["csrf_token"]) if state.get("csrf_token") else ""
    return {"principal": state.get("principal"), "csrf_token": state["csrf_masked"],
            "flash": pending_flash(request) if "app" in request.scope else None}


def create_templates() -> Jinja2Blocks:
    templates = Jinja2Blocks(directory=str(TEMPLATE_DIR), context_processors=[request_context])
    templates.env.autoescape = True
    templates.env.filters["duration"] = describe
    templates.env.filters["time_left"] = time_left
    templates.env.trim_blocks = True
    templates.env.lstrip_blocks = True
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
