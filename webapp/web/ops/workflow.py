"""`/ops/workflows/{id}`: one DBOS workflow, its steps, relatives and operator actions.

The page shows what DBOS recorded (inputs, each step's output or error and timing, the
parent, children and forks) and offers cancel, resume and fork-from-a-step. Each action
is two requests, so it works without JavaScript: a link opens a confirmation form that
asks why (`?confirm=cancel`), and its POST checks the rules against the workflow's
status at that moment (`webapp.workflows.control`), acts, and audits who and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from dbos import DBOS, WorkflowStatus
from pydantic import Field, StringConstraints
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from webapp.workflows import control as workflow_control
from webapp.core.forms import FormInvalid, FormModel, parse_form, parse_query
from webapp.web.ops.workflows import business_links, from_epoch_ms, workflow_href
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.database import in_session

SHOWN_CHARS = 4_000  # of an input or output; the rest is cut with a note
MAX_RELATIVES = 100


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


def _steps(raw: list[Any]) -> list[StepRow]:
    return [StepRow(s["function_id"], s["function_name"], from_epoch_ms(s["started_at_epoch_ms"]),
                    (s["completed_at_epoch_ms"] - s["started_at_epoch_ms"])
                    if s["completed_at_epoch_ms"] and s["started_at_epoch_ms"] else None,
                    None if s["error"] is not None or s["output"] is None else _shown(s["output"]),
                    _error(s["error"]), s["child_workflow_id"]) for s in raw]


def _relative(w: WorkflowStatus) -> dict[str, Any]:
    return {"id": w.workflow_id, "name": w.name, "status": w.status, "href": workflow_href(w.workflow_id),
            "created": from_epoch_ms(w.created_at)}


async def _load(request: Request, workflow_id: str) -> dict[str, Any]:
    status = await workflow_control.find(workflow_id, load=True)
    if status is None:
        raise HTTPException(404, f"No workflow with id {workflow_id}.")
    steps = _steps(await DBOS.list_workflow_steps_async(workflow_id))
    children = await DBOS.list_workflows_async(parent_workflow_id=workflow_id, limit=MAX_RELATIVES,
                                               load_input=False, load_output=False)
    forks = await DBOS.list_workflows_async(forked_from=workflow_id, limit=MAX_RELATIVES, sort_desc=True,
                                            load_input=False, load_output=False)
    last_step = max((s.number for s in steps), default=0)
    return {
        "w": status, "steps": steps, "last_step": last_step,
        "children": [_relative(c) for c in children], "forks": [_relative(f) for f in forks],
        "link": (await in_session(request, lambda s: business_links(s, [status]))).get(workflow_id),
        "created": from_epoch_ms(status.created_at), "updated": from_epoch_ms(status.updated_at),
        "input": _shown(status.input) if status.input is not None else None,
        "output": _shown(status.output) if status.output is not None else None,
        "error": _error(status.error),
        "why_not": {action: workflow_control.refusal(action, status.status, step=1, last_step=last_step)
                    for action in ("cancel", "resume", "fork")},  # None: the action is offered
        "href": workflow_href(workflow_id),
    }


def _as_json(page: dict[str, Any]) -> dict[str, Any]:
    w: WorkflowStatus = page["w"]
    return {
        "id": w.workflow_id, "name": w.name, "status": w.status, "queue": w.queue_name,
        "executor": w.executor_id, "app_version": w.app_version, "recovery_attempts": w.recovery_attempts,
        "created": page["created"], "updated": page["updated"],
        "parent": w.parent_workflow_id, "forked_from": w.forked_from,
        "link": page["link"].href if page["link"] else None,
        "input": page["input"], "output": page["output"], "error": page["error"],
        "steps": [{"number": s.number, "name": s.name, "started": s.started, "duration_ms": s.duration_ms,
                   "output": s.output, "error": s.error, "child": s.child} for s in page["steps"]],
        "children": page["children"], "forks": page["forks"],
    }


async def workflow_page(request: Request) -> Response:
    """One workflow with its steps; `?confirm=<action>` adds the confirmation form."""
    workflow_id = request.path_params["workflow_id"]
    query = parse_query(ConfirmQuery, request.query_params)
    page = await _load(request, workflow_id)
    if wants_json(request):
        return DataJSONResponse(_as_json(page))
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
    try:
        result = await workflow_control.act(action, workflow_id, step=form.step if action == "fork" else None)
    except workflow_control.ActionRefused as refused:
        raise HTTPException(refused.status_code, str(refused)) from None
    await in_session(request, lambda s: workflow_control.audit(s, result, principal, form.reason, form.step))
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


PATH = "/ops/workflows/{workflow_id:path}"
routes = [
    guarded_route(PATH + "/cancel", cancel_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(PATH + "/resume", resume_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(PATH + "/fork", fork_workflow, access=Access.admin, methods=["POST"]),
    guarded_route(PATH, workflow_page, access=Access.admin),
]
