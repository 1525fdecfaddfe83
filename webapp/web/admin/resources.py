"""Admin pages for resources: what can be requested, who approves it and within what
limits, and who held one at a given moment. The rules (enough approvers, eligible ones)
live in webapp.services.catalog; the history in webapp.services.access_history."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.core.durations import DURATIONS, LABELS, duration_key
from webapp.core.forms import FormInvalid, FormModel, parse_form, plain_int
from webapp.core.models import Agent, DriftPolicy, Resource, ResourceKind, User, utcnow
from webapp.services import catalog, drift
from webapp.services.access_history import AccessAt, AccessAtQuery, holders_at
from webapp.services.request_table import request_url
from webapp.web.database import in_session, row_or_404
from webapp.web.errors import error_response
from webapp.web.parsing import path_id
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, current_principal, guarded_route


class ResourceForm(FormModel):
    name: Annotated[str, StringConstraints(min_length=2, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    kind: ResourceKind = ResourceKind.app
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    approvals_required: int = Field(default=1, ge=1, le=10)
    max_duration: str = "permanent"
    pending_ttl_hours: int = Field(default=72, ge=1, le=24 * 90)
    auto_approve: bool = False
    agent_id: str = ""  # empty: no agent (grants take effect inside Gatehouse)
    target: Annotated[str, StringConstraints(max_length=catalog.TARGET_MAX)] = ""
    drift_policy: DriftPolicy = DriftPolicy.report

    @field_validator("agent_id")
    @classmethod
    def _an_id(cls, value: str) -> str:
        if value and plain_int(value, max_digits=9) is None:
            raise ValueError("Choose an agent from the list.")
        return value

    @field_validator("max_duration")
    @classmethod
    def _offered(cls, value: str) -> str:
        if value not in DURATIONS:
            raise ValueError("Choose one of the listed durations.")
        return value


# Resources ---------------------------------------------------------------------------------

def _resource_choices(agents: list[Agent]) -> dict[str, Any]:
    return {"kinds": list(ResourceKind), "durations": [(k, LABELS[k]) for k in DURATIONS],
            "agent_options": [("", "None: grants take effect in Gatehouse only")]
                             + [(str(a.id), f"{a.name} ({a.kind})") for a in agents],
            "agent_names": {a.id: a.name for a in agents},
            "drift_options": [(DriftPolicy.report.value, "Report differences"),
                              (DriftPolicy.correct.value, "Correct differences (remove extra members, add missing)")]}


async def resources_page(request: Request) -> Response:
    """What can be requested, who approves it, and the form to add a resource."""
    return await _resources_response(request)


async def _resources_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                              values: dict[str, Any] | None = None, error: str | None = None,
                              approver_ids: list[int] | None = None) -> Response:
    def load(session: Session) -> tuple[Any, list[User], list[Agent]]:
        return catalog.list_resources(session), catalog.possible_approvers(session), catalog.agent_choices(session)

    resources, candidates, agents = await in_session(request, load)
    context = {"resources": resources, "candidates": candidates, "errors": errors or {}, "error": error,
               "values": values or {"kind": "app", "approvals_required": "1", "max_duration": "permanent",
                                    "pending_ttl_hours": "72", "drift_policy": "report"},
               "approver_ids": approver_ids or [], **_resource_choices(agents)}
    return render(request, "admin_resources.html", context, block="resources_table", status_code=status_code)


def _approver_ids(raw: Any) -> list[int]:
    ids = [plain_int(value, max_digits=9) if isinstance(value, str) else None for value in raw.getlist("approvers")]
    if None in ids:
        raise FormInvalid({"approvers": "Choose approvers from the list."}, {})
    return ids  # type: ignore[return-value]


def _changes(form: ResourceForm, approver_ids: list[int]) -> catalog.ResourceChanges:
    return catalog.ResourceChanges(
        name=form.name, kind=form.kind, description=form.description,
        approvals_required=form.approvals_required, max_duration_seconds=DURATIONS[form.max_duration],
        pending_ttl_seconds=form.pending_ttl_hours * 3600, auto_approve=form.auto_approve,
        approver_ids=approver_ids, agent_id=int(form.agent_id) if form.agent_id else None, target=form.target,
        drift_policy=form.drift_policy,
    )


async def _save_resource(request: Request, resource_id: int | None) -> Response:
    principal = current_principal(request)
    raw = await request.form()
    failed = _resources_response if resource_id is None else _resource_response
    try:
        form = parse_form(ResourceForm, raw)
        approver_ids = _approver_ids(raw)
    except FormInvalid as invalid:
        return await failed(request, status_code=422, errors=invalid.errors,
                            values={k: v for k, v in raw.items() if isinstance(v, str)})

    def save(session: Session) -> int:
        existing = row_or_404(session, Resource, resource_id) if resource_id is not None else None
        saved = catalog.save_resource(session, _changes(form, approver_ids), resource=existing,
                                      actor=principal.email, actor_id=principal.id)
        return saved.id  # type: ignore[return-value]

    try:
        saved_id = await in_session(request, save)
    except catalog.CatalogError as refused:
        return await failed(request, status_code=422, error=str(refused),
                            values={k: v for k, v in raw.items() if isinstance(v, str)}, approver_ids=approver_ids)
    return RedirectResponse(f"/admin/resources/{saved_id}" if resource_id else "/admin/resources", status_code=303)


async def create_resource(request: Request) -> Response:
    return await _save_resource(request, None)


async def update_resource(request: Request) -> Response:
    return await _save_resource(request, path_id(request, "resource_id"))


async def resource_page(request: Request) -> Response:
    """Edit one resource and its approvers."""
    return await _resource_response(request)


async def _resource_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                             values: dict[str, Any] | None = None, error: str | None = None,
                             approver_ids: list[int] | None = None) -> Response:
    resource_id = path_id(request, "resource_id")

    def load(session: Session) -> tuple[Resource, list[User], list[User], list[Agent], list[Any]]:
        resource = row_or_404(session, Resource, resource_id)
        return (resource, catalog.approvers_of(session, resource_id), catalog.possible_approvers(session),
                catalog.agent_choices(session), drift.findings_of(session, resource_id=resource_id))

    resource, approvers, candidates, agents, findings = await in_session(request, load)
    current = {
        "name": resource.name, "kind": resource.kind, "description": resource.description,
        "approvals_required": str(resource.approvals_required),
        "max_duration": duration_key(resource.max_duration_seconds) if resource.max_duration_seconds in DURATIONS.values() else "permanent",
        "pending_ttl_hours": str(resource.pending_ttl_seconds // 3600),
        "auto_approve": "on" if resource.auto_approve else "",
        "agent_id": str(resource.agent_id or ""), "target": resource.target, "drift_policy": resource.drift_policy,
    }
    context = {"resource": resource, "candidates": candidates, "errors": errors or {}, "error": error,
               "values": values or current, "findings": findings,
               "approver_ids": approver_ids if approver_ids is not None else [u.id for u in approvers],
               "access_at": "", "access_errors": {}, **_resource_choices(agents)}
    return render(request, "admin_resource.html", context, block="resource_form", status_code=status_code)


def _local_time(moment: datetime) -> str:
    """A UTC time as a datetime-local field shows it: no zone; seconds only when there are some."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds" if moment.second else "minutes")


BAD_TIME = "Enter a date and time, such as 2026-03-01T09:30 (UTC)."


async def resource_access_page(request: Request) -> Response:
    """Who held this resource at the moment `at` (UTC; now when empty), from the grants."""
    resource_id = path_id(request, "resource_id")
    raw = request.query_params.get("at", "")
    try:
        query = parse_form(AccessAtQuery, {"at": raw})
    except FormInvalid as invalid:
        message = invalid.errors.get("at", BAD_TIME)
        message = message if message.startswith("Enter") else BAD_TIME
        if wants_json(request):
            return error_response(request, 400, message, fields={"at": message})
        resource = await in_session(request, lambda s: row_or_404(s, Resource, resource_id))
        # The field starts empty: a datetime-local input refuses (and the browser warns about) other text.
        context = {"resource": resource, "answer": None, "access_at": "", "access_errors": {"at": message},
                   "error": message}
        return render(request, "admin_resource_access.html", context, block="resource_access", status_code=400)
    now = utcnow()
    at = query.at or now

    def load(session: Session) -> tuple[Resource, AccessAt]:
        return row_or_404(session, Resource, resource_id), holders_at(session, resource_id, at, now=now)

    resource, answer = await in_session(request, load)
    shown = _local_time(at)
    if wants_json(request):
        return DataJSONResponse({"resource": {"id": resource.id, "name": resource.name}, "at": at, "more": answer.more,
                                 "holders": [{**asdict(h), "request_url": request_url(h.request_id) if h.request_id
                                              else None} for h in answer.holders]})
    context = {"resource": resource, "answer": answer, "access_at": shown, "access_errors": {}, "error": None,
               "live": query.at is None, "link": f"/admin/resources/{resource_id}/access?{urlencode({'at': shown})}"}
    return render(request, "admin_resource_access.html", context, block="resource_access")


routes = [
    guarded_route("/admin/resources", resources_page, access=Access.admin),
    guarded_route("/admin/resources", create_resource, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/resources/{resource_id:int}", resource_page, access=Access.admin),
    guarded_route("/admin/resources/{resource_id:int}", update_resource, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/resources/{resource_id:int}/access", resource_access_page, access=Access.admin),
]
