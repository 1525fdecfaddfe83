"""The audit log: every action name, and writing an event inside the caller's transaction.

An event always commits with the change it records (it is added to the caller's session),
so the log never claims a change that rolled back, nor misses one that committed. Its id
orders the live feed (webapp.live.feed).

An event written while a person's request runs names where it came from (`channel`: web,
api, slack, email) and, for the API, the token (`token_id`): the web guard wraps such
requests in `acting_through`, and the workflows that act later for such a request
(submitting, deciding, revoking, importing) carry the token id and channel in their input
and wrap their steps the same way, so a recovered workflow still names them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy import text
from sqlalchemy.orm import Session

from webapp.core.models import AuditEvent, FulfilmentTask, Grant, utcnow

NOTIFY_CHANNEL = "gatehouse_audit"  # webapp.live.feed listens on it
Via = Literal["web", "api", "slack", "email"]  # where a person made a change (audit_events.channel)
_acting: ContextVar[tuple[int | None, Via | None]] = ContextVar("acting", default=(None, None))


@contextmanager
def acting_through(token_id: int | None, channel: Via | None = None) -> Iterator[None]:
    """Audit events recorded inside this block (this task, and the worker threads it starts)
    name `token_id` and `channel`; a token implies the API. None, None says explicitly that
    neither is involved (Gatehouse acting on its own)."""
    reset = _acting.set((token_id, "api" if token_id is not None else channel))
    try:
        yield
    finally:
        _acting.reset(reset)


def acting_person(token_id: int | None, actor_id: int | None) -> AbstractContextManager[None]:
    """`acting_through` for a change a person asked for through the pages or the API (a revoke,
    an import), whose channel was not carried: the web, or the API when a token was used; a
    change with no person behind it names neither."""
    return acting_through(token_id, None if actor_id is None else "web")


def acting_token() -> int | None:
    """The token the current change is made with, to carry into a workflow's input."""
    return _acting.get()[0]


def acting_channel() -> Via | None:
    """Where the current change comes from, to carry into a workflow's input."""
    return _acting.get()[1]


class Action(StrEnum):
    """Every action the audit log records, by subject. The value is what the log stores."""

    # request:<id>
    REQUEST_SUBMITTED = "request.submitted"
    REQUEST_APPROVAL_RECORDED = "request.approval_recorded"  # one of N approvals
    REQUEST_APPROVED = "request.approved"
    REQUEST_AUTO_APPROVED = "request.auto_approved"
    REQUEST_REJECTED = "request.rejected"
    REQUEST_CANCELED = "request.canceled"
    REQUEST_EXPIRED = "request.expired"
    REQUEST_FAILED = "request.failed"
    DECISION_IGNORED = "decision.ignored"  # late, repeated or unauthorised
    # grant:<id>
    GRANT_CREATED = "grant.created"
    GRANT_EXTENDED = "grant.extended"  # an approved extension moved its end
    GRANT_EXPIRING = "grant.expiring"  # entered its last day (the sweep)
    GRANT_REVOKED = "grant.revoked"  # early, or at its expiry
    GRANT_ACTIVE = "grant.active"  # its agent confirmed the membership
    GRANT_REMOVED = "grant.removed"  # its agent confirmed the removal
    # task:<id> (a fulfilment task; its grant's request sees it)
    TASK_DONE = "task.done"  # by a person
    TASK_FAILED = "task.failed"
    TASK_RETRYING = "task.retrying"  # its target does not answer (once per new error)
    TASK_RETRIED = "task.retried"
    TASK_CANCELLED = "task.cancelled"
    # user:<id>
    USER_CREATED = "user.created"
    USER_UPDATED = "user.updated"  # from the identity provider's claims at sign-in
    USER_ROLE_CHANGED = "user.role_changed"
    USER_ACTIVATED = "user.activated"
    USER_DEACTIVATED = "user.deactivated"
    ACCOUNT_UPDATED = "user.settings_changed"  # a person's own settings (time zone)
    SIGNED_IN = "auth.signed_in"
    SIGN_IN_FAILED = "auth.sign_in_failed"
    SIGNED_OUT = "auth.signed_out"
    BREAK_GLASS = "auth.break_glass"  # the password sign-in kept for when the identity provider is down
    TOKEN_ISSUED = "token.issued"
    TOKEN_REVOKED = "token.revoked"
    # resource:<id>
    RESOURCE_CREATED = "resource.created"
    RESOURCE_UPDATED = "resource.updated"
    # agent:<id>
    AGENT_CREATED = "agent.created"
    AGENT_UPDATED = "agent.updated"
    AGENT_CHECKED = "agent.checked"  # a connection test, and what it found
    DRIFT_FOUND = "drift.found"  # resource:<id>: members with no grant, grants with no membership
    DRIFT_CORRECTED = "drift.corrected"  # resource:<id>: the extra removed, the missing added
    # import:<id>
    IMPORT_STARTED = "import.started"
    IMPORT_RESUMED = "import.resumed"
    IMPORT_RETRIED = "import.retried"
    IMPORT_CANCEL_REQUESTED = "import.cancel_requested"
    IMPORT_USERS_UPSERTED = "import.users_upserted"
    IMPORT_FINISHED = "import.finished"
    IMPORT_CANCELLED = "import.cancelled"
    IMPORT_FAILED = "import.failed"
    # workflow:<id>, schedule:<name>, executor:<id>
    WORKFLOW_CANCELLED = "workflow.cancelled"
    WORKFLOW_RESUMED = "workflow.resumed"
    WORKFLOW_FORKED = "workflow.forked"
    SCHEDULE_PAUSED = "schedule.paused"
    SCHEDULE_RESUMED = "schedule.resumed"
    SCHEDULE_TRIGGERED = "schedule.triggered"
    BATCH_STARTED = "ops.batch_started"
    SHUTDOWN = "ops.shutdown"
    EXECUTOR_ADOPTED = "executor.adopted"  # a dead executor's workflows handed to the live ones


def request_of(session: Session, subject: str) -> int | None:
    """The access request a subject concerns: "request:N" is N, "grant:N" its grant's."""
    kind, _, number = subject.partition(":")
    if not (number.isascii() and number.isdigit()):
        return None
    if kind == "request":
        return int(number)
    if kind == "grant":
        return session.scalar(sa.select(Grant.request_id).where(Grant.id == int(number)))
    if kind == "task":
        return session.scalar(sa.select(Grant.request_id).join(FulfilmentTask, FulfilmentTask.grant_id == Grant.id)
                              .where(FulfilmentTask.id == int(number)))
    return None


def record_event(
    session: Session,
    *,
    actor: str,
    action: Action,
    subject: str,
    details: dict[str, Any] | None = None,
    actor_id: int | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Write one audit row. `at`: when it happened, for history written after the fact (the demo
    seed); every live change is recorded at the moment it is made."""
    token_id, channel = _acting.get()
    event = AuditEvent(
        at=at or utcnow(),
        actor=actor,
        actor_id=actor_id,
        action=str(action),  # the plain text: drivers may write an enum member by its name
        subject=subject,
        details=details or {},
        request_id=request_of(session, subject),
        token_id=token_id,
        channel=channel,
    )
    session.add(event)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit, so the live feed wakes only for rows it can read.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return event
