"""`/ops/workflows`: the DBOS workflows behind the app, for admins, each linked to its
business object (an access request or an import job), filterable and paged.

Read from DBOS's own API (`list_workflows`), so it shows exactly what DBOS will recover,
cancel or resume; inputs and outputs are not loaded for the list.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

import sqlalchemy as sa
from dbos import DBOS
from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.forms import FormModel, parse_query
from webapp.models import AccessRequest
from webapp.web.rendering import render, wants_json
from webapp.web.security import Access, guarded_route
from webapp.web.sessions import in_session

PAGE_SIZE = 50
STATUSES = ("PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
IMPORT_PREFIX = "import-"


class WorkflowQuery(FormModel):
    status: Literal["PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED",
                    "MAX_RECOVERY_ATTEMPTS_EXCEEDED"] | None = None
    name: Annotated[str, StringConstraints(max_length=200, pattern=r"^[\w.<>-]*$")] = ""
    queue: Annotated[str, StringConstraints(max_length=100, pattern=r"^[\w.-]*$")] = ""
    prefix: Annotated[str, StringConstraints(max_length=200)] = ""
    page: int = Field(default=1, ge=1, le=10_000)


@dataclass(frozen=True)
class WorkflowRow:
    id: str
    name: str
    status: str
    queue: str | None
    executor: str | None
    created: datetime | None
    updated: datetime | None
    parent: str | None
    link: str | None  # the business object's page
    link_text: str | None
    href: str  # this workflow's own page


def _when(epoch_ms: int | None) -> datetime | None:
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms else None


def workflow_href(workflow_id: str) -> str:
    return "/ops/workflows/" + quote(workflow_id, safe="")


def import_job_of(workflow_id: str) -> int | None:
    """`import-<job>-...` (runs and chunks); `import-start-<key>` names no job yet."""
    head = workflow_id[len(IMPORT_PREFIX):].split("-", 1)[0]
    return int(head) if workflow_id.startswith(IMPORT_PREFIX) and head.isdigit() else None


async def workflows_page(request: Request) -> Response:
    """DBOS workflows, newest first: status, name, queue, id prefix."""
    query = parse_query(WorkflowQuery, request.query_params)
    found = await DBOS.list_workflows_async(
        status=query.status, name=query.name or None, queue_name=query.queue or None,
        workflow_id_prefix=query.prefix or None, limit=PAGE_SIZE + 1, offset=(query.page - 1) * PAGE_SIZE,
        sort_desc=True, load_input=False, load_output=False)
    shown = found[:PAGE_SIZE]
    ids = [i for w in shown for i in (w.workflow_id, w.forked_from) if i]  # a fork works for its original's request
    request_of = dict(await in_session(request, lambda s: s.execute(
        sa.select(AccessRequest.workflow_id, AccessRequest.id).where(AccessRequest.workflow_id.in_(ids))).all()))  # type: ignore[attr-defined]
    rows = []
    for w in shown:
        job = import_job_of(w.workflow_id)
        owner = next((i for i in (w.workflow_id, w.forked_from) if i in request_of), None)
        link, text = ((f"/requests/{request_of[owner]}", f"Request #{request_of[owner]}")
                      if owner else
                      (f"/admin/import/{job}", f"Import {job}") if job else (None, None))
        rows.append(WorkflowRow(w.workflow_id, w.name, w.status, w.queue_name, w.executor_id, _when(w.created_at),
                                _when(w.updated_at), w.parent_workflow_id, link, text, workflow_href(w.workflow_id)))
    params = {k: v for k, v in query.model_dump().items() if v not in (None, "") and k != "page"}

    def href(page: int) -> str:
        return "/ops/workflows?" + urlencode({**params, "page": page})

    older = href(query.page + 1) if len(found) > PAGE_SIZE else None
    newer = href(query.page - 1) if query.page > 1 else None
    if wants_json(request):
        return JSONResponse({"workflows": [_as_json(r) for r in rows], "next": older, "previous": newer})
    return render(request, "ops_workflows.html", {"rows": rows, "query": query, "statuses": STATUSES,
                                                  "older": older, "newer": newer}, block="workflows_table")


def _as_json(row: WorkflowRow) -> dict[str, Any]:
    return {**row.__dict__, "created": row.created.isoformat() if row.created else None,
            "updated": row.updated.isoformat() if row.updated else None}


routes = [guarded_route("/ops/workflows", workflows_page, access=Access.admin)]
