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
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response

from webapp.core.forms import parse_query
from webapp.services.logs import TimeRange
from webapp.core.models import AccessRequest, ImportJob
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, guarded_route
from webapp.web.database import in_session

PAGE_SIZE = 50
STATUSES = ("PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")
IMPORT_PREFIX = "import-"


class WorkflowQuery(TimeRange):
    status: Literal["PENDING", "ENQUEUED", "SUCCESS", "ERROR", "CANCELLED",
                    "MAX_RECOVERY_ATTEMPTS_EXCEEDED"] | None = None
    name: Annotated[str, StringConstraints(max_length=200, pattern=r"^[\w.<>-]*$")] = ""
    queue: Annotated[str, StringConstraints(max_length=100, pattern=r"^[\w.-]*$")] = ""
    prefix: Annotated[str, StringConstraints(max_length=200)] = ""
    # INTEGER ids: PostgreSQL refuses to compare them with more than 2**31 - 1
    request: int | None = Field(default=None, ge=1, le=2**31 - 1)  # an access request's workflow and its forks
    job: int | None = Field(default=None, ge=1, le=2**31 - 1)  # an import job's runs and chunks
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
    progress: str | None  # the request's status, or an import's chunks done of total


def from_epoch_ms(epoch_ms: int | None) -> datetime | None:
    """A DBOS timestamp (epoch milliseconds) as an aware UTC datetime."""
    return datetime.fromtimestamp(epoch_ms / 1000, UTC) if epoch_ms else None


def workflow_href(workflow_id: str) -> str:
    return "/ops/workflows/" + quote(workflow_id, safe="")


def import_job_of(workflow_id: str) -> int | None:
    """`import-<job>-...` (runs and chunks); `import-start-<key>` names no job yet."""
    head = workflow_id[len(IMPORT_PREFIX):].split("-", 1)[0]
    return int(head) if workflow_id.startswith(IMPORT_PREFIX) and head.isdigit() else None


async def _ids_of_request(request: Request, request_id: int) -> list[str]:
    """The request's workflow and every fork of it (empty if the request has none)."""
    found = await in_session(request, lambda s: s.scalar(
        sa.select(AccessRequest.workflow_id).where(AccessRequest.id == request_id)))
    if not found:
        return []
    forks = await DBOS.list_workflows_async(forked_from=found, load_input=False, load_output=False)
    return [found, *(f.workflow_id for f in forks)]


@dataclass(frozen=True)
class BusinessLink:
    """What a workflow works for: a request (its own, or its original's for a fork) or an import job."""

    href: str
    text: str
    progress: str | None  # the request's status, or the import's chunks done of total


def business_links(session: Session, workflows: list[Any]) -> dict[str, BusinessLink]:
    """The business object of each of these DBOS workflows that has one, by workflow id."""
    ids = [i for w in workflows for i in (w.workflow_id, w.forked_from) if i]
    requests = {wid: (rid, status) for wid, rid, status in session.execute(
        sa.select(AccessRequest.workflow_id, AccessRequest.id, AccessRequest.status)
        .where(AccessRequest.workflow_id.in_(ids)))}  # type: ignore[attr-defined]
    jobs = {j for j in (import_job_of(w.workflow_id) for w in workflows) if j}
    chunks = {job_id: f"chunks {done:,}/{total:,}" for job_id, done, total in session.execute(
        sa.select(ImportJob.id, ImportJob.chunks_done, ImportJob.chunks_total).where(ImportJob.id.in_(jobs)))}  # type: ignore[union-attr]
    links = {}
    for w in workflows:
        owner = next((i for i in (w.workflow_id, w.forked_from) if i in requests), None)
        job = import_job_of(w.workflow_id)
        if owner:
            request_id, status = requests[owner]
            links[w.workflow_id] = BusinessLink(f"/requests/{request_id}", f"Request #{request_id}", status)
        elif job:
            links[w.workflow_id] = BusinessLink(f"/admin/import/{job}", f"Import {job}", chunks.get(job))
    return links


def _id_prefix(query: WorkflowQuery) -> str | None:
    """The id prefix to list by (None: any); "" when `prefix` and `job` exclude each other."""
    wanted = [p for p in (query.prefix, f"{IMPORT_PREFIX}{query.job}-" if query.job else "") if p]
    longest = max(wanted, key=len, default=None)
    return "" if longest and not all(longest.startswith(p) for p in wanted) else longest


async def workflows_page(request: Request) -> Response:
    """DBOS workflows, newest first: status, name, queue, id prefix, request, import job, started between."""
    query = parse_query(WorkflowQuery, request.query_params)
    workflow_ids = await _ids_of_request(request, query.request) if query.request else None
    prefix = _id_prefix(query)
    if (query.request and not workflow_ids) or prefix == "":
        found: list[Any] = []  # no such request, or an id prefix and a job that exclude each other
    else:
        found = await DBOS.list_workflows_async(
            workflow_ids=workflow_ids, status=query.status, name=query.name or None, queue_name=query.queue or None,
            workflow_id_prefix=prefix,
            start_time=query.since.isoformat() if query.since else None,
            end_time=query.until.isoformat() if query.until else None,
            limit=PAGE_SIZE + 1, offset=(query.page - 1) * PAGE_SIZE, sort_desc=True, load_input=False,
            load_output=False)
    shown = found[:PAGE_SIZE]
    links = await in_session(request, lambda s: business_links(s, shown))
    rows = []
    for w in shown:
        link = links.get(w.workflow_id)
        rows.append(WorkflowRow(w.workflow_id, w.name, w.status, w.queue_name, w.executor_id, from_epoch_ms(w.created_at),
                                from_epoch_ms(w.updated_at), w.parent_workflow_id, link and link.href,
                                link and link.text, workflow_href(w.workflow_id), link and link.progress))
    params = {k: v for k, v in query.form_values().items() if v and k != "page"}

    def href(page: int) -> str:
        return "/ops/workflows?" + urlencode({**params, "page": page})

    older = href(query.page + 1) if len(found) > PAGE_SIZE else None
    newer = href(query.page - 1) if query.page > 1 else None
    if wants_json(request):
        return DataJSONResponse({"workflows": rows, "next": older, "previous": newer})
    return render(request, "ops_workflows.html", {"rows": rows, "query": query, "values": query.form_values(),
                                                  "statuses": STATUSES, "older": older, "newer": newer},
                  block="workflows_table")



routes = [guarded_route("/ops/workflows", workflows_page, access=Access.admin)]
