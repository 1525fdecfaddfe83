"""`/errors` and `/audit` for admins, with `/audit.csv` streamed for any size.

Both pages are filter forms (GET, so a view is a URL) over keyset-paged tables; the table is
also a fragment (htmx) and JSON (`Accept: application/json`), like every list.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from webapp.core.forms import FormModel, parse_query
from webapp.services.logs import (
    AUDIT_COLUMNS,
    AuditQuery,
    ErrorQuery,
    Page,
    audit_export,
    audit_page,
    error_page,
    error_sources,
)
from webapp.web.database import in_session
from webapp.web.rendering import render, wants_json
from webapp.web.security import Access, guarded_route


def _older_href(path: str, query: FormModel, page: Page) -> str | None:
    if page.next_before is None:
        return None
    params = {k: v for k, v in query.model_dump(mode="json").items() if v not in (None, "")}
    return f"{path}?{urlencode({**params, 'before': page.next_before})}"


def _json_rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [row.model_dump(mode="json") for row in rows]


async def errors_page(request: Request) -> Response:
    """The error log, newest first, filterable by source."""
    query = parse_query(ErrorQuery, request.query_params)
    page, sources = await in_session(request, lambda s: (error_page(s, query), error_sources(s)))
    older = _older_href("/errors", query, page)
    if wants_json(request):
        return JSONResponse({"errors": _json_rows(page.rows), "older": older})
    context = {"page": page, "query": query, "sources": sources, "older": older,
               "pretty": lambda message: json.dumps(message, indent=2, ensure_ascii=False, sort_keys=True)}
    return render(request, "errors.html", context, block="errors_table")


async def audit_log_page(request: Request) -> Response:
    """The audit log, newest first, filterable by actor, action, subject and time."""
    query = parse_query(AuditQuery, request.query_params)
    page = await in_session(request, lambda s: audit_page(s, query))
    older = _older_href("/audit", query, page)
    if wants_json(request):
        return JSONResponse({"events": _json_rows(page.rows), "older": older})
    params = {k: v for k, v in query.model_dump(mode="json").items() if v not in (None, "") and k != "before"}
    context = {"page": page, "query": query, "older": older, "values": query.form_values(),
               "csv_href": "/audit.csv" + (f"?{urlencode(params)}" if params else "")}
    return render(request, "audit.html", context, block="audit_table")


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...)).
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """A value as a CSV cell a spreadsheet shows as text: times in ISO 8601, and text that
    would start a formula prefixed with an apostrophe (OWASP's advice for CSV injection)."""
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def _csv_lines(rows: Iterator[tuple[Any, ...]]) -> Iterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(AUDIT_COLUMNS)
    for row in rows:
        writer.writerow([*(csv_cell(value) for value in row[:-1]),
                         csv_cell(json.dumps(row[-1], ensure_ascii=False, sort_keys=True))])
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


async def audit_csv(request: Request) -> Response:
    """The matching audit rows as CSV, oldest first, streamed in batches (constant memory)."""
    query = parse_query(AuditQuery, request.query_params)
    rows = audit_export(request.app.state.db, query)
    return StreamingResponse(_csv_lines(rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": 'attachment; filename="audit.csv"',
                                      "Cache-Control": "no-store"})


routes = [
    guarded_route("/errors", errors_page, access=Access.admin),
    guarded_route("/audit", audit_log_page, access=Access.admin),
    guarded_route("/audit.csv", audit_csv, access=Access.admin),
]
