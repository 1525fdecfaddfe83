"""Fulfilment tasks: `/tasks` (what I have to do; every task, for admins), a task's page, and
the four things people do with one (done, can't do, retry, resolve). Each action goes to the
task's workflow (webapp.workflows.fulfilment), which is the authority; a refusal (TaskError,
NotAnsweredYet) answers through webapp.web.errors."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field, StringConstraints
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.core.forms import FormModel, parse_form, parse_query
from webapp.core.models import TaskStatus
from webapp.services.tasks import PAGE_SIZE, TaskRow, all_tasks, task_view, to_do
from webapp.web.database import in_session
from webapp.web.parsing import path_id
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.workflows import fulfilment


class TaskListQuery(FormModel):
    status: Annotated[str, Field(json_schema_extra={"enum": ["", *TaskStatus]})] = ""
    page: int = Field(default=1, ge=1, le=100_000)


class NoteForm(FormModel):
    note: Annotated[str, StringConstraints(max_length=1000)] = ""


class ReasonForm(FormModel):
    note: Annotated[str, StringConstraints(min_length=3, max_length=1000)]


def _json_row(row: TaskRow) -> dict[str, Any]:
    task = row.task
    return {"id": task.id, "action": task.action, "status": task.status, "what": row.what, "person": row.person,
            "resource": row.resource, "agent": row.agent, "agent_kind": row.agent_kind, "target": task.target,
            "attempts": task.attempts, "last_error": task.last_error, "note": task.note,
            "grant_id": task.grant_id, "request_id": row.request_id, "workflow_id": task.workflow_id,
            "created_at": task.created_at, "updated_at": task.updated_at, "finished_at": task.finished_at,
            "url": f"/tasks/{task.id}"}


async def tasks_page(request: Request) -> Response:
    """My tasks to do; for admins also every task, newest first, by status, a page at a time."""
    principal = current_principal(request)
    query = parse_query(TaskListQuery, request.query_params)
    status = query.status if query.status in set(TaskStatus) else ""

    def load(session: Any) -> tuple[list[TaskRow], list[TaskRow], int]:
        mine = to_do(session, principal)
        rows, total = all_tasks(session, status=status, page=query.page) if principal.is_admin else ([], 0)
        return mine, rows, total

    mine, rows, total = await in_session(request, load)
    if wants_json(request):
        return DataJSONResponse({"to_do": [_json_row(r) for r in mine],
                                 "tasks": [_json_row(r) for r in rows], "total": total, "page": query.page,
                                 "page_size": PAGE_SIZE})
    context = {"mine": mine, "rows": rows, "total": total, "status": status, "page": query.page,
               "statuses": list(TaskStatus), "more": query.page * PAGE_SIZE < total}
    return render(request, "tasks.html", context, block="tasks")


async def task_page(request: Request) -> Response:
    """One task: what to do, where it stands, its history, and what this viewer may do now."""
    principal = current_principal(request)
    task_id = path_id(request, "task_id", "task")
    view = await in_session(request, lambda s: task_view(s, principal, task_id))
    if wants_json(request):
        return DataJSONResponse({**_json_row(view.row), "actions": view.actions,
                                 "history": [{"at": e.at, "action": e.action, "actor": e.actor, "details": e.details}
                                             for e in view.history]})
    return render(request, "task.html", {"view": view, "row": view.row, "task": view.row.task}, block="task")


async def _send(request: Request, kind: str, form_model: type[FormModel]) -> Response:
    principal = current_principal(request)
    task_id = path_id(request, "task_id", "task")
    form = parse_form(form_model, await request.form())  # FormInvalid: a 422 (webapp.web.errors)
    reply = await fulfilment.send_message(request.app.state.db, principal, task_id, kind, getattr(form, "note", ""))
    if wants_json(request):
        return DataJSONResponse({"id": task_id, **reply})
    return RedirectResponse(f"/tasks/{task_id}", status_code=303)


async def mark_done(request: Request) -> Response:
    """A person made the change of a manual task: the grant moves on."""
    return await _send(request, "done", NoteForm)


async def cannot_do(request: Request) -> Response:
    """A person cannot make the change: the task fails, loudly, with their reason."""
    return await _send(request, "cant", ReasonForm)


async def retry(request: Request) -> Response:
    """Try a failed task again, once the cause is fixed."""
    return await _send(request, "retry", NoteForm)


async def resolve(request: Request) -> Response:
    """Close a failed task by hand: the change was made (or found unnecessary) another way."""
    return await _send(request, "resolve", ReasonForm)


routes = [
    guarded_route("/tasks", tasks_page, access=Access.member),
    guarded_route("/tasks/{task_id:int}", task_page, access=Access.member),
    guarded_route("/tasks/{task_id:int}/done", mark_done, access=Access.member, methods=["POST"]),
    guarded_route("/tasks/{task_id:int}/cant", cannot_do, access=Access.member, methods=["POST"]),
    guarded_route("/tasks/{task_id:int}/retry", retry, access=Access.member, methods=["POST"]),
    guarded_route("/tasks/{task_id:int}/resolve", resolve, access=Access.member, methods=["POST"]),
]


