"""Agents as admins manage them: their settings as text, the list with its load, and saving
one with its audit event. (The connections themselves are webapp.agents; the web layer runs
their checks, since services never import agents.)

Settings are `name = value` lines. They never hold a secret: a secret is only ever named,
as an environment variable (`*_env`) or an absolute file path (`*_file`), so neither the
database nor a page can leak one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePosixPath
from string import Formatter
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.config import AGENT_SECRET_ENV_PREFIX
from webapp.core.emails import EMAIL_PATTERN
from webapp.core.errors import Refusal
from webapp.core.models import OPEN_TASK_STATUSES, Agent, FulfilmentTask, Resource, User, utcnow
from webapp.services.audit import Action, record_event

MANUAL = "manual"
MANUAL_CHECK = "Nothing to connect to: a person does this agent's work."
VALUE_MAX = 500
SETTINGS_TEXT_MAX = 8000
LIST_KEYS = {"keep_members"}  # several values: `;`-separated or on repeated lines
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
SECRET_WORDS = ("password", "passwd", "secret", "token", "apikey", "api_key", "credential", "private_key")
TASK_LIMIT = 50

_SECRET_KEYS = {"password": "Password", "token": "Bearer token", "secret": "Signing secret"}


def _secret(name: str) -> dict[str, str]:
    label = _SECRET_KEYS[name]
    return {f"{name}_env": f"{label}: environment variable", f"{name}_file": f"{label}: file (absolute path)"}


# Per kind, the settings keys the agent reads (webapp/agents/*.from_config) and their labels.
KEYS: dict[str, dict[str, str]] = {
    "postgres": {"host": "Host", "port": "Port", "dbname": "Database", "user": "User", **_secret("password"),
                 "login_template": "Login of a person ({local} or {email})"},
    "ldap": {"url": "Server URL (ldap:// or ldaps://)", "bind_dn": "Bind DN", **_secret("password"),
             "people_base": "Base DN of people", "mail_attribute": "Email attribute",
             "keep_members": "Members never removed (DNs)"},
    "scim": {"url": "SCIM base URL", **_secret("token"), "user_filter": "User filter ({email} or {local})"},
    "webhook": {"url": "URL", **_secret("secret")},
    MANUAL: {"assignees": "Who does the work (emails, comma-separated)"},
}
KIND_LABELS = {"postgres": "PostgreSQL roles", "ldap": "LDAP groups", "scim": "SCIM 2.0 groups",
               "webhook": "Signed webhook", MANUAL: "Manual (a person does it)"}
REQUIRED = {"scim": ("url",), "webhook": ("url",)}
URL_SCHEMES = {"ldap": ("ldap://", "ldaps://"), "scim": ("http://", "https://"), "webhook": ("http://", "https://")}
TEMPLATES = {"login_template", "user_filter"}  # str.format with {local} and {email}


class AgentRefused(Refusal):
    """An agent cannot be saved as asked; `field` names the form field at fault."""

    status_code = 422


# Settings text -------------------------------------------------------------------------------

def _refuse(message: str) -> AgentRefused:
    return AgentRefused(message, field="settings")


def _lines(text: str) -> list[tuple[int, str, str]]:
    """(line number, key, value) of every `name = value` line; blank lines and `#` comments skipped."""
    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, equals, value = stripped.partition("=")
        if not equals:
            raise _refuse(f"Line {number}: write each setting as name = value.")
        found.append((number, key.strip(), value.strip()))
    return found


def _looks_secret(key: str) -> bool:
    lowered = key.lower()
    return any(word in lowered for word in SECRET_WORDS) and not lowered.endswith(("_env", "_file"))


def _check_key(kind: str, key: str) -> None:
    """Refuse a key that would hold a secret itself, or one this kind does not read."""
    if _looks_secret(key):
        shown = key[:60]
        raise _refuse(f"{shown} would hold a secret in the database: name where it lives instead, "
                      f"with {shown}_env (an environment variable) or {shown}_file (a file).")
    if key not in KEYS[kind]:
        raise _refuse(f"{kind} agents have no setting {key[:60]!r}; they read {', '.join(KEYS[kind])}.")


def _check_value(key: str, value: str) -> str:
    """The value as stored, or a refusal saying what is wrong with it."""
    if len(value) > VALUE_MAX:
        raise _refuse(f"{key} is too long: at most {VALUE_MAX} characters.")
    if not value.isprintable():
        raise _refuse(f"{key} contains characters that are not allowed.")
    if key.endswith("_env") and not ENV_NAME.match(value):
        raise _refuse(f"{key} must name an environment variable (capital letters, digits and _), not hold the secret.")
    if key.endswith("_env") and not value.startswith(AGENT_SECRET_ENV_PREFIX):
        raise _refuse(f"{key} must name a variable starting with {AGENT_SECRET_ENV_PREFIX}: an agent never reads "
                      "the app's own settings.")
    if key.endswith("_file") and not PurePosixPath(value).is_absolute():
        raise _refuse(f"{key} must be an absolute path to the file that holds the secret.")
    if key in TEMPLATES and not _plain_template(value):
        raise _refuse(f"{key} may use only {{local}} and {{email}} (write {{{{ and }}}} for braces).")
    return value


def _plain_template(value: str) -> bool:
    """Whether `value` formats with exactly {local} and {email}: no attributes, indexes or specs."""
    try:
        fields = [(name, spec, conversion) for _text, name, spec, conversion in Formatter().parse(value)
                  if name is not None]
    except ValueError:
        return False
    return all(name in ("local", "email") and not spec and conversion is None for name, spec, conversion in fields)


def _typed(kind: str, key: str, value: str) -> Any:
    """Values the agents read as other than text: the port a number, URLs with their scheme."""
    if key == "port":
        if not (value.isascii() and value.isdigit() and 0 < int(value) < 65536):
            raise _refuse("port must be a number from 1 to 65535.")
        return int(value)
    if key == "url":
        if not value.lower().startswith(URL_SCHEMES.get(kind, ("",))):
            raise _refuse(f"url must start with {' or '.join(URL_SCHEMES[kind])}.")
        try:
            netloc = urlsplit(value).netloc
        except ValueError:
            raise _refuse("url is not a valid URL.") from None
        if "@" in netloc:
            raise _refuse("url must not carry a user or password: the secret goes in the environment or a file.")
    if key == "assignees":
        emails = [e.strip() for e in value.split(",") if e.strip()]
        bad = [e for e in emails if not EMAIL_PATTERN.match(e)]
        if bad:
            raise _refuse(f"assignees must be email addresses; {bad[0]!r} is not one.")
        return ", ".join(e.lower() for e in emails)
    return value


def _check_whole(kind: str, settings: dict[str, Any]) -> None:
    """Rules across keys: each secret named once, the keys a kind cannot do without."""
    for name in _SECRET_KEYS:
        if f"{name}_env" in settings and f"{name}_file" in settings:
            raise _refuse(f"Name the {name} once: either {name}_env or {name}_file.")
    missing = [key for key in REQUIRED.get(kind, ()) if not settings.get(key)]
    if missing:
        raise _refuse(f"{kind} agents need {', '.join(missing)}.")


def parse_settings(kind: str, text: str) -> dict[str, Any]:
    """The settings dict that `text` (`name = value` lines) describes for a `kind` agent."""
    if kind not in KEYS:
        raise AgentRefused(f"Choose one of the kinds: {', '.join(KEYS)}.", field="kind")
    if len(text) > SETTINGS_TEXT_MAX:
        raise _refuse(f"The settings are too long: at most {SETTINGS_TEXT_MAX} characters.")
    settings: dict[str, Any] = {}
    for number, key, value in _lines(text):
        _check_key(kind, key)
        if key in LIST_KEYS:
            settings.setdefault(key, []).extend(_check_value(key, v.strip()) for v in value.split(";") if v.strip())
            continue
        if key in settings:
            raise _refuse(f"Line {number}: {key} is set twice.")
        if value:
            settings[key] = _typed(kind, key, _check_value(key, value))
    _check_whole(kind, settings)
    return settings


def without_secrets(text: str) -> str:
    """The submitted settings minus any line that would hold a secret, to show a refused form
    again without sending a typed secret back."""
    return "\n".join(line for line in text.splitlines() if not _may_hold_secret(line))


def _may_hold_secret(line: str) -> bool:
    """A secret-named key, or a secret's place (`*_env`, `*_file`) holding something else."""
    key, equals, value = line.partition("=")
    key = key.strip()
    if not equals:
        return False
    if _looks_secret(key):
        return True
    if key.endswith(("_env", "_file")):
        try:
            _check_value(key, value.strip())
        except AgentRefused:
            return True
    return False


def settings_text(kind: str, settings: dict[str, Any]) -> str:
    """Settings as the form shows them: one `name = value` line each (a list: one line per item)."""
    order = list(KEYS.get(kind, {})) + sorted(set(settings) - set(KEYS.get(kind, {})))
    lines = []
    for key in order:
        value = settings.get(key)
        if value in (None, "", []):
            continue
        values = value if isinstance(value, list) else [value]
        lines.extend(f"{key} = {item}" for item in values)
    return "\n".join(lines)


def settings_shown(kind: str, settings: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(key, label, value) of each setting for a page; secrets appear only as the names settings hold."""
    labels = KEYS.get(kind, {})
    return [(key, labels.get(key, key), "; ".join(map(str, value)) if isinstance(value, list) else str(value))
            for key, value in settings.items() if value not in (None, "", [])]


# Listing -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentRow:
    """One agent as its list, its page and their JSON show it: settings, limits, health, load."""

    id: int
    name: str
    kind: str
    settings: dict[str, Any]
    queue: str
    concurrency: int
    rate_limit: int
    rate_period_seconds: float
    drift_interval_seconds: int
    health: str  # "healthy", "unhealthy: <last error>" or "not checked yet"
    healthy: bool | None
    last_error: str | None
    checked_at: datetime | None
    drift_checked_at: datetime | None
    drift_found: int
    open_tasks: int
    resources: int


@dataclass(frozen=True)
class AgentTaskRow:
    """One of an agent's recent tasks, for its page."""

    id: int
    action: str
    person: str
    resource: str
    status: str
    attempts: int
    last_error: str | None
    created_at: datetime
    url: str


AGENT_QUEUE_PREFIX = "agent-"


def queue_of(agent_id: int) -> str:
    """The DBOS queue an agent's attempts run on (webapp.workflows.fulfilment enqueues there)."""
    return f"{AGENT_QUEUE_PREFIX}{agent_id}"


def health_of(agent: Agent) -> str:
    if agent.healthy is None:
        return "not checked yet"
    return "healthy" if agent.healthy else f"unhealthy: {agent.last_error or 'no reason recorded'}"


def _row(agent: Agent, open_tasks: int, resources: int) -> AgentRow:
    return AgentRow(
        id=agent.id, name=agent.name, kind=agent.kind, settings=dict(agent.settings or {}),  # type: ignore[arg-type]
        queue=queue_of(agent.id), concurrency=agent.concurrency, rate_limit=agent.rate_limit,  # type: ignore[arg-type]
        rate_period_seconds=agent.rate_period_seconds, drift_interval_seconds=agent.drift_interval_seconds,
        health=health_of(agent), healthy=agent.healthy, last_error=agent.last_error, checked_at=agent.checked_at,
        drift_checked_at=agent.drift_checked_at, drift_found=agent.drift_found, open_tasks=open_tasks,
        resources=resources)


def _counts(session: Session, agent_ids: list[int] | None = None) -> tuple[dict[int, int], dict[int, int]]:
    """(open tasks, resources) per agent id: two grouped queries, not two per agent."""
    tasks = sa.select(FulfilmentTask.agent_id, sa.func.count()).where(
        FulfilmentTask.status.in_([s.value for s in OPEN_TASK_STATUSES]))  # type: ignore[attr-defined]
    used = sa.select(Resource.agent_id, sa.func.count()).where(Resource.agent_id.is_not(None))  # type: ignore[union-attr]
    if agent_ids is not None:
        tasks = tasks.where(FulfilmentTask.agent_id.in_(agent_ids))  # type: ignore[attr-defined]
        used = used.where(Resource.agent_id.in_(agent_ids))  # type: ignore[union-attr]
    open_tasks = {agent_id: count for agent_id, count in session.execute(tasks.group_by(FulfilmentTask.agent_id))}
    resources = {agent_id: count for agent_id, count in session.execute(used.group_by(Resource.agent_id))}
    return open_tasks, resources  # type: ignore[return-value]


def list_agents(session: Session) -> list[AgentRow]:
    """Every agent by name, with its open tasks and the resources that use it."""
    agents = session.scalars(sa.select(Agent).order_by(Agent.name)).all()
    open_tasks, resources = _counts(session)
    return [_row(a, open_tasks.get(a.id, 0), resources.get(a.id, 0)) for a in agents]  # type: ignore[arg-type]


def agent_row(session: Session, agent: Agent) -> AgentRow:
    open_tasks, resources = _counts(session, [agent.id])  # type: ignore[list-item]
    return _row(agent, open_tasks.get(agent.id, 0), resources.get(agent.id, 0))  # type: ignore[arg-type]


def resources_using(session: Session, agent_id: int) -> list[Resource]:
    return list(session.scalars(sa.select(Resource).where(Resource.agent_id == agent_id).order_by(Resource.name)))


def recent_tasks(session: Session, agent_id: int, limit: int = TASK_LIMIT) -> list[AgentTaskRow]:
    """The agent's newest tasks, with who and what each is for."""
    rows = session.execute(
        sa.select(FulfilmentTask, User.name, User.email, Resource.name)
        .join(User, User.id == FulfilmentTask.user_id).join(Resource, Resource.id == FulfilmentTask.resource_id)
        .where(FulfilmentTask.agent_id == agent_id).order_by(FulfilmentTask.id.desc()).limit(limit)  # type: ignore[union-attr]
    ).all()
    return [AgentTaskRow(id=task.id, action=task.action, person=f"{name} <{email}>", resource=resource,
                         status=task.status, attempts=task.attempts, last_error=task.last_error,
                         created_at=task.created_at, url=f"/tasks/{task.id}")
            for task, name, email, resource in rows]


# Saving --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AgentChanges:
    name: str
    kind: str
    settings: dict[str, Any]
    concurrency: int
    rate_limit: int
    rate_period_seconds: float
    drift_interval_seconds: int


def _validate(session: Session, changes: AgentChanges, agent: Agent | None) -> None:
    """A unique name; a kind that changes only while nothing depends on the old one."""
    clash = session.scalar(sa.select(Agent.id).where(Agent.name == changes.name))
    if clash is not None and (agent is None or clash != agent.id):
        raise AgentRefused(f"An agent named {changes.name} already exists.", field="name")
    if agent is not None and agent.kind != changes.kind:
        open_tasks, resources = _counts(session, [agent.id])  # type: ignore[list-item]
        if open_tasks.get(agent.id) or resources.get(agent.id):  # type: ignore[call-overload]
            raise AgentRefused("The kind of an agent cannot change while resources use it or tasks are open; "
                               "add a new agent instead.", field="kind")


def save_agent(session: Session, changes: AgentChanges, agent: Agent | None = None, *,
               actor: str, actor_id: int | None) -> Agent:
    """Create (agent=None) or update an agent, audited with its settings (which hold no secret)."""
    _validate(session, changes, agent)
    created = agent is None
    if agent is None:
        agent = Agent(name=changes.name, kind=changes.kind)
        session.add(agent)
    agent.name, agent.kind, agent.settings = changes.name, changes.kind, dict(changes.settings)
    agent.concurrency, agent.rate_limit = changes.concurrency, changes.rate_limit
    agent.rate_period_seconds = changes.rate_period_seconds
    agent.drift_interval_seconds = changes.drift_interval_seconds
    session.flush()
    record_event(session, actor=actor, actor_id=actor_id,
                 action=Action.AGENT_CREATED if created else Action.AGENT_UPDATED, subject=f"agent:{agent.id}",
                 details={"name": changes.name, "kind": changes.kind, "settings": dict(changes.settings),
                          "concurrency": changes.concurrency, "rate_limit": changes.rate_limit,
                          "rate_period_seconds": changes.rate_period_seconds,
                          "drift_interval_seconds": changes.drift_interval_seconds})
    return agent


def record_check(session: Session, agent_id: int, healthy: bool, message: str, *,
                 actor: str = "system", actor_id: int | None = None) -> Agent:
    """What a connection test found: the agent's health, and an audit event saying so."""
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is None:
        raise AgentRefused(f"No agent with id {agent_id}.", status_code=404)
    agent.healthy, agent.checked_at = healthy, utcnow()
    agent.last_error = None if healthy else message[:2000]
    record_event(session, actor=actor, actor_id=actor_id, action=Action.AGENT_CHECKED, subject=f"agent:{agent_id}",
                 details={"healthy": healthy, "message": message[:2000]})
    return agent
