"""Admin pages for agents: the connections through which grants take effect in target
systems (webapp.agents), their settings, health and load, and a connection test. The rules
(settings that never hold a secret, unique names) live in webapp.services.agent_settings."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.agents import agent_for
from webapp.agents.base import AgentError
from webapp.core.background import in_thread
from webapp.core.forms import FormInvalid, FormModel, parse_form
from webapp.core.models import Agent
from webapp.services import agent_settings, drift
from webapp.services.agent_settings import KEYS, KIND_LABELS, MANUAL, AgentChanges, AgentRefused
from webapp.web.database import in_session, row_or_404
from webapp.web.errors import error_response
from webapp.web.flash import redirect_with
from webapp.web.parsing import path_id
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.workflows import drift as drift_workflow

log = logging.getLogger(__name__)
NAME_CHARACTERS = "Use letters, digits, spaces, dots, dashes and underscores, starting with a letter or digit."
NEW_AGENT = {"kind": "postgres", "concurrency": "4", "rate_limit": "60", "rate_period_seconds": "60",
             "drift_interval_minutes": "60"}


class AgentForm(FormModel):
    name: Annotated[str, StringConstraints(min_length=2, max_length=120)]
    kind: str = "postgres"
    settings: Annotated[str, StringConstraints(max_length=agent_settings.SETTINGS_TEXT_MAX)] = ""
    concurrency: int = Field(default=4, ge=1, le=100)
    rate_limit: int = Field(default=60, ge=1, le=100_000)
    rate_period_seconds: int = Field(default=60, ge=1, le=86_400)
    drift_interval_minutes: int = Field(default=60, ge=1, le=7 * 24 * 60)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not (value[:1].isascii() and value[:1].isalnum()
                and all(c.isascii() and (c.isalnum() or c in " ._-") for c in value)):
            raise ValueError(NAME_CHARACTERS)
        return value

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in KEYS:
            raise ValueError("Choose one of the listed kinds.")
        return value


def _agent_id(request: Request) -> int:
    return path_id(request, "agent_id", "agent")


def _form_choices() -> dict[str, Any]:
    """The kind select and, per kind, the settings it reads (the hint under the settings field)."""
    return {"kind_options": [(kind, f"{kind}: {KIND_LABELS[kind]}") for kind in KEYS],
            "key_help": [(kind, KIND_LABELS[kind], list(KEYS[kind].items())) for kind in KEYS]}


def _refused(request: Request, status_code: int, errors: dict[str, str], error: str | None) -> Response:
    """A refused form as JSON, for clients that asked for it."""
    return error_response(request, status_code, error or "; ".join(errors.values()) or "Check your input",
                          fields=errors)


# The list and the form to add one -----------------------------------------------------------------

async def agents_page(request: Request) -> Response:
    """Every agent with its health, queue and load, and the form to add one."""
    return await _agents_response(request)


async def _agents_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                           values: dict[str, Any] | None = None, error: str | None = None) -> Response:
    if wants_json(request) and status_code >= 400:
        return _refused(request, status_code, errors or {}, error)
    rows = await in_session(request, agent_settings.list_agents)
    if wants_json(request):
        return DataJSONResponse({"agents": rows})
    context = {"agents": rows, "errors": errors or {}, "error": error, "values": values or dict(NEW_AGENT),
               **_form_choices()}
    return render(request, "admin_agents.html", context, block="agents_table", status_code=status_code)


# One agent ----------------------------------------------------------------------------------------

async def agent_page(request: Request) -> Response:
    """One agent: settings (secrets only by name), the form to change them, a connection
    test, the resources that use it and its latest tasks."""
    return await _agent_response(request, block="agent_status")


def _current_values(agent: agent_settings.AgentRow) -> dict[str, str]:
    return {"name": agent.name, "kind": agent.kind,
            "settings": agent_settings.settings_text(agent.kind, agent.settings),
            "concurrency": str(agent.concurrency), "rate_limit": str(agent.rate_limit),
            "rate_period_seconds": f"{agent.rate_period_seconds:g}",
            "drift_interval_minutes": str(max(1, agent.drift_interval_seconds // 60))}


async def _agent_response(request: Request, *, block: str = "agent_form", status_code: int = 200,
                          errors: dict[str, str] | None = None, values: dict[str, Any] | None = None,
                          error: str | None = None) -> Response:
    agent_id = _agent_id(request)

    def load(session: Session) -> tuple[Any, ...]:
        agent = agent_settings.agent_row(session, row_or_404(session, Agent, agent_id))
        resources = [(r.id, r.name, r.target) for r in agent_settings.resources_using(session, agent_id)]
        return (agent, resources, agent_settings.recent_tasks(session, agent_id),
                drift.findings_of(session, agent_id=agent_id))

    agent, resources, tasks, findings = await in_session(request, load)  # a 404 first, also for refused forms
    if wants_json(request):
        if status_code >= 400:
            return _refused(request, status_code, errors or {}, error)
        return DataJSONResponse({"agent": agent, "tasks": tasks, "resources": [
            {"id": rid, "name": name, "target": target, "url": f"/admin/resources/{rid}"}
            for rid, name, target in resources], "drift": [drift_json(*row) for row in findings]})
    context = {"agent": agent, "resources": resources, "tasks": tasks, "findings": findings,
               "checks_drift": agent.kind in drift.KINDS_WITH_MEMBERS,
               "shown": agent_settings.settings_shown(agent.kind, agent.settings),
               "errors": errors or {}, "error": error, "values": values or _current_values(agent), **_form_choices()}
    return render(request, "admin_agent.html", context, block=block, status_code=status_code)


# Saving -------------------------------------------------------------------------------------------

def _changes(form: AgentForm) -> AgentChanges:
    """The form as a change to save; AgentRefused (field "settings") when the settings are not allowed."""
    settings = agent_settings.parse_settings(form.kind, form.settings)
    return AgentChanges(name=form.name, kind=form.kind, settings=settings, concurrency=form.concurrency,
                        rate_limit=form.rate_limit, rate_period_seconds=float(form.rate_period_seconds),
                        drift_interval_seconds=form.drift_interval_minutes * 60)


async def _save_agent(request: Request, agent_id: int | None) -> Response:
    """Create or update from the form; a refusal shows the form again (422), with nothing saved."""
    principal = current_principal(request)
    raw = await request.form()
    values = {k: v for k, v in raw.items() if isinstance(v, str) and k != "csrf_token"}
    values["settings"] = agent_settings.without_secrets(values.get("settings", ""))
    failed = _agents_response if agent_id is None else _agent_response
    try:
        form = parse_form(AgentForm, raw)
        changes = _changes(form)
    except FormInvalid as invalid:
        return await failed(request, status_code=422, errors=invalid.errors, values=values)
    except AgentRefused as refused:
        errors = {refused.field or "settings": str(refused)}
        return await failed(request, status_code=refused.status_code, errors=errors, values=values)

    def save(session: Session) -> agent_settings.AgentRow:
        existing = row_or_404(session, Agent, agent_id) if agent_id is not None else None
        saved = agent_settings.save_agent(session, changes, existing, actor=principal.email, actor_id=principal.id)
        return agent_settings.agent_row(session, saved)

    try:
        saved = await in_session(request, save)
        await in_thread(drift_workflow.apply_schedules, [(saved.id, saved.kind, saved.drift_interval_seconds)])
    except AgentRefused as refused:
        return await failed(request, status_code=refused.status_code, errors={refused.field or "name": str(refused)},
                            values=values)
    url = f"/admin/agents/{saved.id}"
    if wants_json(request):
        return DataJSONResponse({"agent": saved, "url": url}, 201 if agent_id is None else 200,
                                headers={"Location": url} if agent_id is None else None)
    if agent_id is None:
        return RedirectResponse("/admin/agents", status_code=303)
    return redirect_with(request, url, "Saved.")


async def create_agent(request: Request) -> Response:
    """Add an agent: its kind, settings (naming where each secret lives) and queue limits."""
    return await _save_agent(request, None)


async def update_agent(request: Request) -> Response:
    """Change an agent's settings or limits; its drift schedule follows."""
    return await _save_agent(request, _agent_id(request))


# Testing the connection ---------------------------------------------------------------------------

def _run_check(kind: str, settings: dict[str, Any]) -> tuple[bool, str]:
    """(healthy, what the check found): blocking network I/O, for a worker thread."""
    try:
        return True, agent_for(kind, settings).check()
    except AgentError as failed:
        return False, str(failed)
    except Exception as unexpected:  # a test button answers with a sentence, never a 500
        log.exception("checking a %s agent failed unexpectedly", kind)
        return False, f"The check failed unexpectedly ({type(unexpected).__name__}); the server log has the details."


async def check_agent(request: Request) -> Response:
    """Reach the agent's system now and say what was found; record it as the agent's health."""
    principal = current_principal(request)
    agent_id = _agent_id(request)

    def read(session: Session) -> tuple[str, dict[str, Any]]:
        agent = row_or_404(session, Agent, agent_id)
        return agent.kind, dict(agent.settings or {})

    kind, settings = await in_session(request, read)
    healthy: bool | None = None
    message = agent_settings.MANUAL_CHECK
    if kind != MANUAL:
        healthy, message = await in_thread(_run_check, kind, settings)
        await in_session(request, lambda s: agent_settings.record_check(
            s, agent_id, bool(healthy), message, actor=principal.email, actor_id=principal.id))
    if wants_json(request):
        return DataJSONResponse({"agent_id": agent_id, "healthy": healthy, "message": message})
    return redirect_with(request, f"/admin/agents/{agent_id}", message,
                         "info" if healthy is None else "ok" if healthy else "error")


async def check_drift(request: Request) -> Response:
    """Compare the agent's targets with the grants now (the schedule does it every interval)."""
    agent_id = _agent_id(request)
    kind = await in_session(request, lambda s: row_or_404(s, Agent, agent_id).kind)
    if kind not in drift.KINDS_WITH_MEMBERS:
        return error_response(request, 409, "This agent's kind cannot list members: there is no drift to check.")
    result = await drift_workflow.check_now(agent_id)
    if wants_json(request):
        return DataJSONResponse({"agent_id": agent_id, **result})
    message = (f"Drift check: {result['found']} difference(s) in {result['checked']} resource(s), "
               f"{result['corrected']} corrected.")
    if result["errors"]:
        message += " Could not read: " + "; ".join(result["errors"])
    level = "error" if result["errors"] else "warning" if result["found"] > result["corrected"] else "ok"
    return redirect_with(request, f"/admin/agents/{agent_id}", message, level)


def drift_json(finding: Any, resource: str, person: str | None) -> dict[str, Any]:
    return {"resource_id": finding.resource_id, "resource": resource, "kind": finding.kind, "member": finding.member,
            "person": person, "found_at": finding.found_at, "corrected": finding.corrected}


routes = [
    guarded_route("/admin/agents", agents_page, access=Access.admin),
    guarded_route("/admin/agents", create_agent, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/agents/{agent_id:int}", agent_page, access=Access.admin),
    guarded_route("/admin/agents/{agent_id:int}", update_agent, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/agents/{agent_id:int}/check", check_agent, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/agents/{agent_id:int}/drift", check_drift, access=Access.admin, methods=["POST"]),
]
