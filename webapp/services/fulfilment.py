"""Fulfilment tasks: every grant and every end of a grant becomes a change that an agent (or a
person, for a manual agent) carries out in the target system. Plain functions over the
caller's session, each with its audit event; webapp/workflows/fulfilment.py runs them as
datasource transactions, so a replay after a crash never writes twice.

A grant is `active` only once its add task is done and `removed` only once its remove task
is; a resource without an agent goes straight to both. An add that is still open when the
grant ends is cancelled (a manual one that never happened needs no removal); an automatic
one still gets its removal, since an attempt cut off by a timeout may have been applied.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import (
    OPEN_TASK_STATUSES,
    Agent,
    ErrorRecord,
    FulfilmentTask,
    Grant,
    GrantState,
    Resource,
    TaskAction,
    TaskStatus,
    User,
    utcnow,
)
from webapp.services.audit import Action, record_event

ERROR_SOURCE = "agent"
MANUAL = "manual"


class TaskFacts(TypedDict):
    """What carrying out a task needs: the agent's settings (no secrets), who, where."""

    task_id: int
    action: str  # add / remove
    agent_id: int
    agent_kind: str
    settings: dict[str, Any]
    target: str
    email: str
    name: str
    grant_id: int
    resource: str
    ends_at: float | None
    key: str  # names this change across retries (the webhook's idempotency key)
    status: str
    limits: dict[str, float]  # the agent's queue: concurrency, rate_limit, rate_period
    wait_for: NotRequired[str | None]  # an earlier open task of the grant to settle first


class Outcome(TypedDict):
    """What one attempt did: error None when done; transient says whether retrying may help."""

    error: str | None
    transient: bool


def task_workflow_id(grant_id: int, action: str) -> str:
    """One task per grant and action, so starting it twice attaches to the same workflow."""
    return f"grant-{grant_id}-{action}"


def _agent_of(session: Session, grant: Grant) -> tuple[int, str] | None:
    """(agent id, target) where the grant's membership lives: where its add went, or else
    the resource's agent now."""
    added = session.execute(sa.select(FulfilmentTask.agent_id, FulfilmentTask.target).where(
        FulfilmentTask.grant_id == grant.id, FulfilmentTask.action == TaskAction.add)).first()
    if added is not None:
        return added.agent_id, added.target
    resource = session.get(Resource, grant.resource_id)
    if resource is None or resource.agent_id is None:
        return None
    return resource.agent_id, resource.target


def _new_task(session: Session, grant: Grant, action: TaskAction, agent_id: int, target: str) -> FulfilmentTask:
    task = FulfilmentTask(grant_id=grant.id, action=action, agent_id=agent_id,  # type: ignore[arg-type]
                          resource_id=grant.resource_id, user_id=grant.user_id, target=target,
                          workflow_id=task_workflow_id(grant.id, action))  # type: ignore[arg-type]
    session.add(task)
    session.flush()
    return task


def plan_add(session: Session, grant: Grant) -> str | None:
    """Called as the grant is made: an add task when its resource has an agent (the grant is
    provisioning until it is done), else the grant is active at once. The task's workflow id."""
    resource = session.get(Resource, grant.resource_id)
    if resource is None or resource.agent_id is None:
        grant.state = GrantState.active
        return None
    grant.state = GrantState.provisioning
    return _new_task(session, grant, TaskAction.add, resource.agent_id, resource.target).workflow_id


def still_held(session: Session, task: FulfilmentTask) -> int | None:
    """Another grant of the same person, on any resource the same agent serves with the same
    target, has not ended: the membership stays, since removing it would take away access they
    still hold. Its id, or None. The holder's row is locked first, so two of their grants
    ending at once are decided one after the other."""
    session.get(User, task.user_id, with_for_update=True)
    same_place = sa.select(Resource.id).where(Resource.agent_id == task.agent_id, Resource.target == task.target)
    return session.scalar(sa.select(Grant.id).where(
        Grant.user_id == task.user_id, Grant.id != task.grant_id, Grant.revoked_at.is_(None),  # type: ignore[union-attr]
        Grant.resource_id.in_(same_place)).order_by(Grant.id).limit(1))  # type: ignore[attr-defined]


def plan_remove(session: Session, grant: Grant) -> str | None:
    """Called as the grant ends: a remove task where the membership lives (the grant is ending
    until it is done), else the grant is removed at once. The task's workflow id."""
    where = _agent_of(session, grant)
    if where is None:
        grant.state = GrantState.removed
        return None
    grant.state = GrantState.ending
    return _new_task(session, grant, TaskAction.remove, *where).workflow_id


def _task(session: Session, task_id: int) -> FulfilmentTask:
    task = session.get(FulfilmentTask, task_id, with_for_update=True)
    if task is None:
        raise LookupError(f"task {task_id} does not exist")
    return task


def _task_id(session: Session, workflow_id: str) -> int:
    found = session.scalar(sa.select(FulfilmentTask.id).where(FulfilmentTask.workflow_id == workflow_id))
    if found is None:
        raise LookupError(f"no task has the workflow {workflow_id}")
    return found


def start_task(session: Session, workflow_id: str) -> TaskFacts:
    """The task's facts, its status set to running (or waiting, for a person). A removal
    cancels the grant's add if that is still open and names it, so it settles first."""
    task = _task(session, _task_id(session, workflow_id))
    agent = session.get(Agent, task.agent_id)
    person = session.get(User, task.user_id)
    grant = session.get(Grant, task.grant_id)
    resource = session.get(Resource, task.resource_id)
    assert agent is not None and person is not None and grant is not None and resource is not None
    if task.status == TaskStatus.queued:
        task.status = TaskStatus.waiting if agent.kind == MANUAL else TaskStatus.running
        task.updated_at = utcnow()
    wait_for = None
    if task.action == TaskAction.remove:
        # The grant's add, if still open, is pointless now: cancel it here, so that it stops
        # even if its workflow has not started yet, and let the removal wait for it to settle.
        add = session.scalar(sa.select(FulfilmentTask).where(
            FulfilmentTask.grant_id == task.grant_id, FulfilmentTask.action == TaskAction.add))
        if add is not None and cancel_task(session, add.id):  # type: ignore[arg-type]
            wait_for = add.workflow_id
    return TaskFacts(task_id=task.id, action=task.action, agent_id=agent.id, agent_kind=agent.kind,  # type: ignore[typeddict-item]
                     settings=dict(agent.settings or {}), target=task.target, email=person.email, name=person.name,
                     grant_id=grant.id, resource=resource.name,  # type: ignore[typeddict-item]
                     ends_at=grant.expires_at.timestamp() if grant.expires_at else None,
                     key=task.workflow_id, status=task.status, wait_for=wait_for,
                     limits={"concurrency": agent.concurrency, "rate_limit": agent.rate_limit,
                             "rate_period": agent.rate_period_seconds})


def _settle_grant(session: Session, task: FulfilmentTask, *, applied: bool) -> None:
    """The grant follows its task: active once added (unless it ended meanwhile), removed once
    removed. An add that never happened leaves nothing to remove."""
    grant = session.get(Grant, task.grant_id, with_for_update=True)
    assert grant is not None
    subject = f"grant:{grant.id}"
    if task.action == TaskAction.add and applied and grant.state == GrantState.provisioning:
        grant.state = GrantState.active
        record_event(session, actor="workflow", action=Action.GRANT_ACTIVE, subject=subject,
                     details={"task": task.id, "target": task.target})
    elif task.action == TaskAction.remove and grant.state == GrantState.ending:
        grant.state = GrantState.removed
        record_event(session, actor="workflow", action=Action.GRANT_REMOVED, subject=subject,
                     details={"task": task.id, "target": task.target})


def _mark_healthy(session: Session, agent_id: int, healthy: bool, error: str | None) -> None:
    agent = session.get(Agent, agent_id, with_for_update=True)
    if agent is not None and agent.kind != MANUAL:
        agent.healthy, agent.checked_at = healthy, utcnow()
        agent.last_error = error[:2000] if error else (None if healthy else agent.last_error)


def finish_task(session: Session, task_id: int, *, actor_id: int | None = None, note: str = "") -> bool:
    """The change is made: the task is done and its grant moves on. False if it was closed already."""
    task = _task(session, task_id)
    if task.status not in OPEN_TASK_STATUSES:
        return False
    now = utcnow()
    task.status, task.finished_at, task.updated_at, task.last_error = TaskStatus.done, now, now, None
    if actor_id is not None:
        task.resolved_by_id, task.note = actor_id, note[:1000]
        actor = session.get(User, actor_id)
        record_event(session, actor=actor.email if actor else "unknown", actor_id=actor_id, action=Action.TASK_DONE,
                     subject=f"task:{task.id}", details={"action": task.action, "note": task.note})
    else:
        _mark_healthy(session, task.agent_id, True, None)
    _settle_grant(session, task, applied=True)
    return True


def note_failure(session: Session, task_id: int, error: str, *, transient: bool, workflow_id: str | None) -> None:
    """An attempt failed. Transient: the task keeps retrying (queued, with the error shown);
    refused: it is failed, open and loud, until a person retries or resolves it. The agent is
    marked unhealthy; the error log gets a record when the error is new for this task."""
    task = _task(session, task_id)
    if task.status not in OPEN_TASK_STATUSES:
        return
    error = error[:2000]
    new = error != task.last_error
    task.attempts += 1
    task.status = TaskStatus.queued if transient else TaskStatus.failed
    task.last_error, task.updated_at = error, utcnow()
    _mark_healthy(session, task.agent_id, False, error)
    if new:
        session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id,
                                message={"task": task.id, "action": task.action, "target": task.target,
                                         "transient": transient, "error": error}))
    if not transient or new:  # a refusal, or a target newly down: admins see it live
        record_event(session, actor="workflow", action=Action.TASK_RETRYING if transient else Action.TASK_FAILED,
                     subject=f"task:{task.id}", details={"action": task.action, "error": error})


def count_attempt(session: Session, task_id: int) -> None:
    """A person's task: each reminder counts as an attempt to get it done."""
    task = _task(session, task_id)
    task.attempts += 1
    task.updated_at = utcnow()


def reopen_task(session: Session, task_id: int, *, actor_id: int) -> bool:
    """Retry a failed task (after a person fixed the cause). False unless it had failed."""
    task = _task(session, task_id)
    if task.status != TaskStatus.failed:
        return False
    agent_kind = session.scalar(sa.select(Agent.kind).where(Agent.id == task.agent_id))
    task.status = TaskStatus.waiting if agent_kind == MANUAL else TaskStatus.running
    task.updated_at = utcnow()
    actor = session.get(User, actor_id)
    record_event(session, actor=actor.email if actor else "unknown", actor_id=actor_id, action=Action.TASK_RETRIED,
                 subject=f"task:{task.id}", details={"action": task.action})
    return True


def cannot_do(session: Session, task_id: int, *, actor_id: int, note: str) -> bool:
    """A person says the change cannot be made: the task fails, loudly, with their note."""
    task = _task(session, task_id)
    if task.status not in OPEN_TASK_STATUSES:
        return False
    task.status, task.note, task.last_error, task.updated_at = TaskStatus.failed, note[:1000], note[:2000], utcnow()
    task.resolved_by_id = actor_id
    actor = session.get(User, actor_id)
    record_event(session, actor=actor.email if actor else "unknown", actor_id=actor_id, action=Action.TASK_FAILED,
                 subject=f"task:{task.id}", details={"action": task.action, "error": note[:1000], "by_person": True})
    return True


def cancel_task(session: Session, task_id: int) -> bool:
    """An open add whose grant ended: nothing more to do (its removal still follows, since an
    attempt cut off by a crash or a timeout may have been applied)."""
    task = _task(session, task_id)
    if task.status not in OPEN_TASK_STATUSES:
        return False
    now = utcnow()
    task.status, task.finished_at, task.updated_at = TaskStatus.cancelled, now, now
    record_event(session, actor="workflow", action=Action.TASK_CANCELLED, subject=f"task:{task.id}",
                 details={"action": task.action, "why": "the grant ended first"})
    return True


def skip_if_still_held(session: Session, task_id: int) -> bool:
    """A removal whose membership another grant still needs is done without touching the
    target (checked as it starts and again right before each attempt)."""
    task = _task(session, task_id)
    if task.action != TaskAction.remove or task.status not in OPEN_TASK_STATUSES:
        return False
    other = still_held(session, task)
    if other is None:
        return False
    now = utcnow()
    task.status, task.finished_at, task.updated_at = TaskStatus.done, now, now
    task.note = f"Kept: grant #{other} still gives this access."
    _settle_grant(session, task, applied=True)
    return True


def attempt_facts(session: Session, task_id: int) -> TaskFacts | None:
    """What one attempt needs, read afresh (an admin may have fixed the agent's settings
    since the last one); None when there is nothing to do any more: the task was closed
    meanwhile, or a removal is no longer needed."""
    task = _task(session, task_id)
    if task.status not in OPEN_TASK_STATUSES or skip_if_still_held(session, task_id):
        return None
    if task.status == TaskStatus.queued:
        task.status = TaskStatus.running
    return start_task(session, task.workflow_id)


def status_of(session: Session, task_id: int) -> str:
    return _task(session, task_id).status
