"""`/ops/workflows`: the DBOS workflows behind the app, and `/ops/workflows/{id}`: one of
them with its steps, relatives and the operator's actions. For admins.

The list is filterable and paged, each workflow linked to what it works for (an access
request or an import job, webapp.services.workflow_owners); inputs and outputs are not
loaded for it. The page of one workflow shows what DBOS recorded (inputs, each step's
output or error and timing, the parent, children and forks) and offers cancel, resume
and fork-from-a-step. Each action is two requests, so it works without JavaScript: a link
opens a confirmation form that asks why (`?confirm=cancel`), and its POST checks the rules
against the workflow's status at that moment (webapp.workflows.control), acts, and
audits who and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from pydantic import Field, StringConstraints
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.core.forms import FormInvalid, FormModel, TimeRange, parse_form, parse_query
from webapp.services.workflow_owners import import_job_prefix, owners, request_workflow
from webapp.web.database import in_session
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.workflows import control, inspect

PAGE_SIZE = 50
SHOWN_CHARS = 4_000  # of an input or output; the rest is cut with a note
MAX_RELATIVES = 100


def workflow_href(workflow_id: str) -> str:
    return "/ops/workflows/" + quote(workflow_id, safe="")


# The list ------------------------------------------------------------------------------------

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


async def _ids_of_request(request: Request, request_id: int) -> list[str]:
    """The request's workflow and every fork of it (empty if the request has none)."""
    found = await in_session(request, lambda s: request_workflow(s, request_id))
    if not found:
        return []
    return [found, *(f.id for f in await inspect.workflows(forked_from=found))]


def _id_prefix(query: WorkflowQuery) -> str | None:
    """The id prefix to list by (None: any); "" when `prefix` and `job` exclude each other."""
    wanted = [p for p in (query.prefix, import_job_prefix(query.job) if query.job else "") if p]
    longest = max(wanted, key=len, default=None)
    return "" if longest and not all(longest.startswith(p) for p in wanted) else longest


async def workflows_page(request: Request) -> Response:
    """DBOS workflows, newest first: status, name, queue, id prefix, request, import job, started between."""
    query = parse_query(WorkflowQuery, request.query_params)
    workflow_ids = await _ids_of_request(request, query.request) if query.request else None
    prefix = _id_prefix(query)
    if (query.request and not workflow_ids) or prefix == "":
        found: list[inspect.WorkflowInfo] = []  # no such request, or an id prefix and a job that exclude each other
    else:
        found = await inspect.workflows(
            ids=workflow_ids, status=query.status, name=query.name or None, queue=query.queue or None, prefix=prefix,
            since=query.since, until=query.until, limit=PAGE_SIZE + 1, offset=(query.page - 1) * PAGE_SIZE,
            newest_first=True)
    shown = found[:PAGE_SIZE]
    links = await in_session(request, lambda s: owners(s, shown))
    rows = []
    for w in shown:
        link = links.get(w.id)
        rows.append(WorkflowRow(w.id, w.name, w.status, w.queue, w.executor, w.created, w.updated, w.parent,
                                link and link.href, link and link.text, workflow_href(w.id), link and link.progress))
    params = {k: v for k, v in query.form_values().items() if v and k != "page"}

    def href(page: int) -> str:
        return "/ops/workflows?" + urlencode({**params, "page": page})

    older = href(query.page + 1) if len(found) > PAGE_SIZE else None
    newer = href(query.page - 1) if query.page > 1 else None
    if wants_json(request):
        return DataJSONResponse({"workflows": rows, "next": older, "previous": newer})
    return render(request, "ops_workflows.html", {"rows": rows, "query": query, "values": query.form_values(),
                                                  "statuses": inspect.STATUSES, "older": older, "newer": newer},
                  block="workflows_table")


# One workflow --------------------------------------------------------------------------------

class ConfirmQuery(FormModel):
    confirm: Literal["cancel", "resume", "fork"] | None = None
    step: int | None = Field(default=None, ge=1, le=1_000_000)


class ActionForm(FormModel):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=500)]
    step: int | None = Field(default=None, ge=1, le=1_000_000)


@dataclass(frozen=True)
class StepRow:
    number: int
    name: str
    started: datetime | None
    duration_ms: int | None
    output: str | None
    error: str | None
    child: str | None


def _shown(value: Any) -> str:
    """A recorded value as an operator reads it: JSON where it is JSON-like, cut if long."""
    try:
        text = json.dumps(value, indent=2, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + f"\n… ({len(text) - SHOWN_CHARS} more characters)"


def _error(error: Any) -> str | None:
    return None if error is None else f"{type(error).__name__}: {error}"


def _step_row(s: inspect.StepInfo) -> StepRow:
    return StepRow(s.number, s.name, s.started, s.duration_ms,
                   None if s.error is not None or s.output is None else _shown(s.output), _error(s.error), s.child)


@dataclass(frozen=True)
class Relative:
    """A parent's child, or a fork."""

    id: str
    name: str
    status: str
    href: str
    created: datetime | None


@dataclass(frozen=True)
class WorkflowDetail(inspect.WorkflowInfo):
    """One workflow as its JSON answer (and the API spec) states it: what DBOS recorded, with
    the input, output and error as an operator reads them, its steps and its relatives."""

    input: Annotated[str | None, Field(description=f"As JSON text, cut after {SHOWN_CHARS:,} characters.")] = None
    output: str | None = None
    error: str | None = None
    link: str | None = None  # the page of what it works for
    steps: list[StepRow] = dataclass_field(default_factory=list)
    children: list[Relative] = dataclass_field(default_factory=list)
    forks: list[Relative] = dataclass_field(default_factory=list)


def _relative(w: inspect.WorkflowInfo) -> Relative:
    return Relative(w.id, w.name, w.status, workflow_href(w.id), w.created)


async def _load(request: Request, workflow_id: str) -> dict[str, Any]:
    w = await inspect.workflow(workflow_id, load=True)
    if w is None:
        raise HTTPException(404, f"No workflow with id {workflow_id}.")
    steps = [_step_row(s) for s in await inspect.steps(workflow_id)]
    children = await inspect.workflows(parent=workflow_id, limit=MAX_RELATIVES)
    forks = await inspect.workflows(forked_from=workflow_id, limit=MAX_RELATIVES, newest_first=True)
    last_step = max((s.number for s in steps), default=0)
    return {
        "w": w, "steps": steps, "last_step": last_step,
        "children": [_relative(c) for c in children], "forks": [_relative(f) for f in forks],
        "link": (await in_session(request, lambda s: owners(s, [w]))).get(workflow_id),
        "input": _shown(w.input) if w.input is not None else None,
        "output": _shown(w.output) if w.output is not None else None,
        "error": _error(w.error),
        "why_not": {action: control.refusal(action, w.status, step=1, last_step=last_step)
                    for action in ("cancel", "resume", "fork")},  # None: the action is offered
        "href": workflow_href(workflow_id),
    }


def _detail(page: dict[str, Any]) -> WorkflowDetail:
    recorded = {f.name: getattr(page["w"], f.name) for f in fields(inspect.WorkflowInfo)}
    return WorkflowDetail(**{**recorded, "input": page["input"], "output": page["output"], "error": page["error"]},
                          link=page["link"].href if page["link"] else None, steps=page["steps"],
                          children=page["children"], forks=page["forks"])


async def workflow_page(request: Request) -> Response:
    """One workflow with its steps; `?confirm=<action>` adds the confirmation form."""
    workflow_id = request.path_params["workflow_id"]
    query = parse_query(ConfirmQuery, request.query_params)
    page = await _load(request, workflow_id)
    if wants_json(request):
        return DataJSONResponse(_detail(page))
    context = {**page, "confirm": query.confirm, "step": query.step, "errors": {}, "values": {}}
    return render(request, "ops_workflow.html", context, block="confirm" if query.confirm else None)


async def _act(request: Request, action: str) -> Response:
    principal = current_principal(request)
    workflow_id = request.path_params["workflow_id"]
    try:
        form = parse_form(ActionForm, await request.form())
    except FormInvalid as invalid:
        if wants_json(request):
            raise  # a 422 with the fields (webapp.web.errors)
        page = await _load(request, workflow_id)
        context = {**page, "confirm": action, "step": invalid.values.get("step"), "errors": invalid.errors,
                   "values": invalid.values}
        return render(request, "ops_workflow.html", context, block="confirm", status_code=422)
    result = await control.act(action, workflow_id, step=form.step if action == "fork" else None)  # ActionRefused
    await in_session(request, lambda s: control.audit(s, result, principal, form.reason, form.step))
    shown = result.forked_to or workflow_id
    if wants_json(request):
        return JSONResponse({"workflow_id": workflow_id, "action": action, "status_before": result.status_before,
                             "forked_to": result.forked_to, "href": workflow_href(shown)})
    return RedirectResponse(workflow_href(shown), status_code=303)


async def cancel_workflow(request: Request) -> Response:
    """Cancel a running or queued workflow; its children keep running."""
    return await _act(request, "cancel")


async def resume_workflow(request: Request) -> Response:
    """Resume a cancelled or stuck workflow from its last completed step."""
    return await _act(request, "resume")


async def fork_workflow(request: Request) -> Response:
    """Start a new workflow that replays the steps before `step` and runs the rest again."""
    return await _act(request, "fork")


ONE = "/ops/workflows/{workflow_id:path}"
routes = [
    guarded_route("/ops/workflows", workflows_page, access=Access.admin),
    guarded_route(ONE + "/cancel", cancel_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(ONE + "/resume", resume_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(ONE + "/fork", fork_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(ONE, workflow_page, access=Access.admin),
]
