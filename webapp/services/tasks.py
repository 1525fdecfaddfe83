"""What people do with fulfilment tasks: who may act on one, what each message does, who is
reminded. The task's workflow applies the messages (webapp/workflows/fulfilment.py); the
pages check the same rule first (`check_message`), so a refusal reads the same either way.

    done     a person made the change of a manual task (waiting)
    cant     a person cannot make it: the task fails, open and loud, with their note
    retry    try a failed task again (after someone fixed the cause)
    resolve  close a failed task by hand: the change was made some other way
    cancel   the system's own: the grant ended before its add was done
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.errors import Refusal
from webapp.core.models import (
    OPEN_TASK_STATUSES,
    AccessRequest,
    Agent,
    AuditEvent,
    FulfilmentTask,
    Grant,
    Resource,
    Role,
    TaskStatus,
    User,
)
from webapp.services import fulfilment
from webapp.services.fulfilment import MANUAL
from webapp.services.identity import Principal

TaskMessageKind = Literal["done", "cant", "retry", "resolve", "cancel"]
PEOPLE_KINDS = ("done", "cant", "retry", "resolve")


class TaskError(Refusal):
    """A task cannot be seen or acted on as asked."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message, status_code, field)


class TaskMessage(TypedDict):
    id: str  # names the event that answers it
    kind: str
    actor_id: int | None  # None: the system (cancel)
    note: str


class TaskReply(TypedDict):
    applied: bool
    status: str  # the task's status afterwards
    note: str  # why nothing changed, when nothing did


def assignees(session: Session, task: FulfilmentTask) -> list[User]:
    """Who does a manual task: the people its agent names (settings "assignees", emails), or
    else the resource's owner; the admins when neither is an active person. Never the person
    the task is about: nobody marks their own removal done."""
    people = [p for p in _named_or_owner(session, session.get(Agent, task.agent_id), task.resource_id)
              if p.id != task.user_id]
    return people or [p for p in admins(session) if p.id != task.user_id]


def _named_or_owner(session: Session, agent: Agent | None, resource_id: int) -> list[User]:
    named = [e.strip().lower() for e in str((agent.settings or {}).get("assignees", "") if agent else "").split(",")]
    if any(named):
        people = list(session.scalars(sa.select(User).where(User.email.in_([e for e in named if e]), User.active)))  # type: ignore[attr-defined]
        if people:
            return people
    owner = session.scalar(sa.select(User).join(Resource, Resource.owner_id == User.id)
                           .where(Resource.id == resource_id, User.active))
    return [owner] if owner is not None else []


def assignee_ids_by_request(session: Session, request_ids: list[int]) -> dict[int, frozenset[int]]:
    """For the live feed: who would do the manual tasks of each request's resource (admins aside,
    who see everything), so their task lists follow the changes. Queries per distinct resource."""
    found = session.execute(
        sa.select(AccessRequest.id, AccessRequest.requester_id, Resource.id, Agent)
        .join(Resource, Resource.id == AccessRequest.resource_id).join(Agent, Agent.id == Resource.agent_id)
        .where(AccessRequest.id.in_(request_ids), Agent.kind == MANUAL)).all()  # type: ignore[union-attr]
    per_resource: dict[int, list[int]] = {}
    out: dict[int, frozenset[int]] = {}
    for request_id, requester_id, resource_id, agent in found:
        if resource_id not in per_resource:
            per_resource[resource_id] = [p.id for p in _named_or_owner(session, agent, resource_id)]  # type: ignore[misc]
        out[request_id] = frozenset(i for i in per_resource[resource_id] if i != requester_id)
    return out


def admins(session: Session) -> list[User]:
    return list(session.scalars(sa.select(User).where(User.role == Role.admin, User.active, ~User.is_service)
                                .order_by(User.email)))


class Refused(TypedDict):
    status: int  # 403: not this person's to do; 409: not in this state
    why: str


def refusal(session: Session, actor: Principal | User | None, task: FulfilmentTask, kind: str) -> Refused | None:
    """Why `actor` may not send `kind` to this task now, or None when they may."""
    def no(status: int, why: str) -> Refused:
        return Refused(status=status, why=why)

    if kind not in PEOPLE_KINDS:
        return no(403, f"unknown action {kind!r}")
    if actor is None or not getattr(actor, "active", True):
        return no(403, "unknown or inactive person")
    agent_kind = session.scalar(sa.select(Agent.kind).where(Agent.id == task.agent_id))
    is_admin = getattr(actor, "role", None) == Role.admin
    is_assignee = agent_kind == MANUAL and any(p.id == actor.id for p in assignees(session, task))
    if not (is_admin or is_assignee):
        return no(403, "only the task's assignees and admins can act on it")
    if actor.id == task.user_id:
        return no(403, "nobody may close a task about their own access")
    if task.status not in OPEN_TASK_STATUSES:
        return no(409, f"the task is already {task.status}")
    if kind in ("done", "cant") and (agent_kind != MANUAL or task.status != TaskStatus.waiting):
        return no(409, "only a person's task that waits for them can be marked done or impossible")
    if kind in ("retry", "resolve") and task.status != TaskStatus.failed:
        return no(409, "only a failed task can be retried or resolved")
    return None


def check_message(session: Session, principal: Principal, task_id: int, kind: str) -> str:
    """The task's workflow id when `principal` may send `kind` to it; TaskError otherwise."""
    task = session.get(FulfilmentTask, task_id)
    if task is None or not may_view(session, principal, task):
        raise TaskError(404, f"No task #{task_id}.")
    refused = refusal(session, principal, task, kind)
    if refused:
        raise TaskError(refused["status"], refused["why"][0].upper() + refused["why"][1:] + ".")
    return task.workflow_id


def may_view(session: Session, principal: Principal, task: FulfilmentTask) -> bool:
    if principal.is_admin or principal.id == task.user_id:
        return True
    return any(p.id == principal.id for p in assignees(session, task))


def apply_message(session: Session, task_id: int, message: TaskMessage) -> TaskReply:
    """Apply one message in the task's workflow. Refused ones change nothing and say why."""
    task = session.get(FulfilmentTask, task_id)
    assert task is not None
    kind = message.get("kind")
    if kind == "cancel":
        applied = fulfilment.cancel_task(session, task_id)
        return TaskReply(applied=applied, status=task.status, note="" if applied else f"the task is {task.status}")
    actor = session.get(User, message.get("actor_id")) if message.get("actor_id") else None
    refused = refusal(session, actor, task, str(kind))
    if refused:
        return TaskReply(applied=False, status=task.status, note=refused["why"])
    assert actor is not None and actor.id is not None
    note = str(message.get("note") or "").strip()
    if kind in ("done", "resolve"):
        fulfilment.finish_task(session, task_id, actor_id=actor.id, note=note)
    elif kind == "cant":
        fulfilment.cannot_do(session, task_id, actor_id=actor.id, note=note)
    else:
        fulfilment.reopen_task(session, task_id, actor_id=actor.id)
    return TaskReply(applied=True, status=task.status, note="")


def describe(session: Session, task: FulfilmentTask) -> str:
    """The task as a sentence: "Add Jamal Carter to aws-production until 2 Dec 14:00 UTC"."""
    person = session.get(User, task.user_id)
    resource = session.get(Resource, task.resource_id)
    grant = session.get(Grant, task.grant_id)
    who = person.name if person else f"person #{task.user_id}"
    where = resource.name if resource else f"resource #{task.resource_id}"
    if task.target:
        where += f" ({task.target})"
    if task.action == "remove":
        return f"Remove {who} from {where}"
    until = f" until {grant.expires_at.strftime('%d %b %H:%M')} UTC" if grant and grant.expires_at else ""
    return f"Add {who} to {where}{until}"


def reminder_for(session: Session, task_id: int, round_: int) -> list[dict[str, object]]:
    """The messages a manual task sends: to its assignees when it appears (round 0) and at each
    reminder, and to the admins as well from the second reminder on (escalation)."""
    task = session.get(FulfilmentTask, task_id)
    assert task is not None
    if task.status != TaskStatus.waiting:
        return []
    people = {p.email: p for p in assignees(session, task)}
    if round_ >= 2:
        people.update({p.email: p for p in admins(session)})
    request_id = session.scalar(sa.select(Grant.request_id).where(Grant.id == task.grant_id))
    what = describe(session, task)
    event = f"task.{task.id}." + ("assigned" if round_ == 0 else f"reminder.{round_}")
    subject = what if round_ == 0 else f"Reminder: {what[0].lower()}{what[1:]}"
    body = (f"{what}.\n\nMark it done (or say why it cannot be done) on its task page: /tasks/{task.id}"
            + ("" if round_ < 2 else f"\n\nThis task has waited through {round_} reminders."))
    return [{"request_id": request_id, "event": event, "recipient": email, "subject": subject, "body": body,
             "link": f"/tasks/{task.id}"} for email in sorted(people)]


# Reading -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class TaskRow:
    """A task as the lists and its page show it."""

    task: FulfilmentTask
    what: str  # "Add Jamal Carter to aws-production until ..."
    person: str
    resource: str
    agent: str
    agent_kind: str
    request_id: int | None


PAGE_SIZE = 50


def _rows(session: Session, tasks: list[FulfilmentTask]) -> list[TaskRow]:
    agents = {a.id: a for a in session.scalars(sa.select(Agent).where(Agent.id.in_({t.agent_id for t in tasks})))}  # type: ignore[union-attr]
    requests = {grant_id: request_id for grant_id, request_id in session.execute(
        sa.select(Grant.id, Grant.request_id).where(Grant.id.in_({t.grant_id for t in tasks})))}  # type: ignore[union-attr]
    rows = []
    for task in tasks:
        person = session.get(User, task.user_id)
        resource = session.get(Resource, task.resource_id)
        agent = agents.get(task.agent_id)
        rows.append(TaskRow(task=task, what=describe(session, task), person=person.name if person else "",
                            resource=resource.name if resource else "", agent=agent.name if agent else "",
                            agent_kind=agent.kind if agent else "", request_id=requests.get(task.grant_id)))
    return rows


def to_do(session: Session, principal: Principal) -> list[TaskRow]:
    """Open tasks this person may act on, oldest first: every open one for an admin; a manual
    one they are an assignee of, for anyone else."""
    query = sa.select(FulfilmentTask).where(FulfilmentTask.status.in_(OPEN_TASK_STATUSES))  # type: ignore[attr-defined]
    if not principal.is_admin:
        query = query.join(Agent, Agent.id == FulfilmentTask.agent_id).where(Agent.kind == MANUAL)
    tasks = [t for t in session.scalars(query.order_by(FulfilmentTask.id).limit(1000))
             if principal.is_admin or any(p.id == principal.id for p in assignees(session, t))]
    return _rows(session, tasks[:PAGE_SIZE * 4])


def all_tasks(session: Session, *, status: str = "", page: int = 1) -> tuple[list[TaskRow], int]:
    """Every task, newest first, optionally of one status; a page of them and the total."""
    query = sa.select(FulfilmentTask)
    if status:
        query = query.where(FulfilmentTask.status == status)
    total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    tasks = list(session.scalars(query.order_by(FulfilmentTask.id.desc())  # type: ignore[union-attr]
                                 .limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)))
    return _rows(session, tasks), total


def tasks_of_grant(session: Session, grant_id: int) -> list[TaskRow]:
    return _rows(session, list(session.scalars(sa.select(FulfilmentTask).where(FulfilmentTask.grant_id == grant_id)
                                               .order_by(FulfilmentTask.id))))


@dataclass
class TaskView:
    row: TaskRow
    history: list[AuditEvent]
    actions: list[str] = field(default_factory=list)  # what this viewer may send now


def task_view(session: Session, principal: Principal, task_id: int) -> TaskView:
    task = session.get(FulfilmentTask, task_id)
    if task is None or not may_view(session, principal, task):
        raise TaskError(404, f"No task #{task_id}.")
    history = list(session.scalars(sa.select(AuditEvent).where(AuditEvent.subject == f"task:{task_id}")
                                   .order_by(AuditEvent.id)))
    actions = [kind for kind in PEOPLE_KINDS if refusal(session, principal, task, kind) is None]
    return TaskView(row=_rows(session, [task])[0], history=history, actions=actions)
