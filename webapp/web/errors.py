"""Every error becomes one kind of answer, chosen in one place.

JSON clients get `{"error": ..., "status": ...}` (plus `"fields": {name: message}` when
the input was at fault); htmx gets a small HTML fragment it can swap into the toast
region; browsers get a full error page.
"""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.db import OUTAGE_ERRORS, is_outage
from webapp.core.errors import Refusal
from webapp.core.forms import FormInvalid
from webapp.web.rendering import is_htmx, render, wants_json

log = logging.getLogger(__name__)

TITLES = {
    400: "Bad request",
    401: "Sign-in required",
    403: "Not allowed",
    404: "Not found",
    405: "Method not allowed",
    409: "Cannot do that now",
    413: "Request too large",
    422: "Check your input",
    429: "Too many requests",
    500: "Something went wrong",
    503: "Service unavailable",
}


def error_response(
    request: Request, status_code: int, detail: str, headers: dict[str, str] | None = None,
    fields: dict[str, str] | None = None,
) -> Response:
    """`fields`: what is wrong with each input field; JSON clients get it, pages show `detail`."""
    title = TITLES.get(status_code, "Error")
    if wants_json(request):
        body: dict[str, object] = {"error": detail, "status": status_code}
        if fields is not None:
            body["fields"] = fields
        return JSONResponse(body, status_code, headers=headers)
    headers = dict(headers or {})
    if is_htmx(request):
        # Errors land in the toast region whatever element asked.
        headers.update({"HX-Retarget": "#toasts", "HX-Reswap": "beforeend"})
    return render(
        request,
        "error.html",
        {"status_code": status_code, "title": title, "detail": detail},
        block="error_toast",
        status_code=status_code,
        headers=headers,
        fragment_only=is_htmx(request),  # boosted requests too: it lands in the toast region
    )


async def http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    detail = exc.detail if exc.detail else TITLES.get(exc.status_code, "Error")
    return error_response(request, exc.status_code, str(detail), dict(exc.headers or {}))


async def refusal(request: Request, exc: Exception) -> Response:
    """A rule said no (webapp.core.errors): its status and sentence, and the field at fault."""
    assert isinstance(exc, Refusal)
    return error_response(request, exc.status_code, str(exc), fields={exc.field: str(exc)} if exc.field else None)


async def form_invalid(request: Request, exc: Exception) -> Response:
    """A form with no page of its own to show again: one message, and the fields for JSON."""
    assert isinstance(exc, FormInvalid)
    return error_response(request, 422, "; ".join(exc.errors.values()), fields=exc.errors)


OUTAGE_RETRY_SECONDS = 5


async def server_error(request: Request, exc: Exception) -> Response:
    """A database that cannot be reached or used now is an outage (503, with Retry-After);
    anything else is a bug (500). Both are logged."""
    if is_outage(exc):
        log.warning("database unavailable on %s %s: %s", request.method, request.url.path,
                    str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return error_response(request, 503, "The database is not answering right now; try again in a few seconds.",
                              {"Retry-After": str(OUTAGE_RETRY_SECONDS)})
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, 500, "The server hit an error; it has been logged.")


EXCEPTION_HANDLERS = {HTTPException: http_exception, Refusal: refusal, FormInvalid: form_invalid,
                      # The drivers' errors are answered here, not by the last-resort handler below,
                      # which Starlette follows by raising the error again.
                      **{error: server_error for error in OUTAGE_ERRORS}, Exception: server_error}
