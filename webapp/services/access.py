"""Access requests: who may ask, decide, cancel, revoke and see, the early checks the
pages make, the payloads the request's workflow carries, and the request page's view.

Plain functions over a session, no web and no DBOS. The workflow
(`webapp.workflows.access`) is the authority on every state change
(`webapp.services.access_changes`); the checks here give a clear answer early (a 4xx with a
reason) instead of a message the workflow would have to ignore. Both apply the same rule
for deciding: `decision_refusal`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, NotRequired, TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.config import Settings
from webapp.core.durations import DURATIONS, allowed, describe
from webapp.core.errors import Refusal
from webapp.core.models import (
    AccessRequest,
    Approval,
    AuditEvent,
    Grant,
    RequestStatus,
    Resource,
    ResourceApprover,
    Role,
    User,
)
from webapp.services.audit import Via, acting_channel
from webapp.services.catalog import approvers_of
from webapp.services.extensions import extendable, held_grant
from webapp.services.identity import Principal
from webapp.services.tasks import TaskRow, tasks_of_grant

DecisionKind = Literal["approve", "reject", "cancel"]


# What the request's workflow carries (recorded by DBOS as its input and its steps' outputs) --

class ReminderPolicy(TypedDict):
    """Fixed into the workflow's input, so a replay keeps the policy it started with."""

    min_grant_seconds: int  # grants at least this long get a reminder
    before_seconds: int  # this long before they end


class Submission(TypedDict):
    """The access workflow's input: the same for a person's form and an operator's batch."""

    requester_id: int
    resource_id: int
    duration_seconds: int | None  # None: permanent
    reason: str
    reminder: ReminderPolicy
    token_id: NotRequired[int | None]  # the API token it was submitted with, for the audit
    channel: NotRequired[Via | None]  # where it was submitted (web, api), for the audit
    extends_grant_id: NotRequired[int | None]  # an extension of this grant (webapp.services.extensions)


class MessageFacts(TypedDict):
    """Enough to tell the holder about their request or grant."""

    request_id: int | None
    requester: str  # the requester's email
    resource: str


class RequestFacts(MessageFacts):
    """What recording a request returns: what the workflow's later steps need."""

    requester_name: str
    reason: str
    duration_seconds: int | None
    auto_approve: bool
    approvals_required: int
    approvers: list[str]  # their emails
    pending_until: float  # epoch seconds
    reminder: ReminderPolicy
    extends_grant_id: NotRequired[int | None]


class Refused(TypedDict):
    """Recording refused the submission (the page shows `refused`)."""

    refused: str
    duplicate_of: NotRequired[int]


class DecisionMessage(TypedDict):
    """A decision sent to the request's workflow; `id` names the event that answers it."""

    id: str
    kind: DecisionKind
    actor_id: int
    comment: str
    token_id: NotRequired[int | None]  # the API token it was sent with, for the audit
    channel: NotRequired[Via | None]  # where it was made (web, api, slack, email), for the audit
    link_id: NotRequired[str | None]  # the emailed link it was made with: spent when it applies


class DecisionOutcome(TypedDict):
    """What one decision message did."""

    status: str  # the request's status afterwards
    applied: bool
    note: str  # why nothing changed, when nothing did
    approvals: int  # distinct approvals counted so far
    required: int


class GrantFacts(TypedDict):
    grant_id: int
    expires_at: float | None  # epoch seconds; None: permanent
    task: NotRequired[str | None]  # the workflow of the add task, when an agent makes it take effect


class EndedGrant(TypedDict):
    ended: bool  # False: it had ended already (by the other path), or it was extended meanwhile
    task: str | None  # the workflow of the remove task, when an agent must undo the membership
    extended_to: NotRequired[float]  # at its expiry: it now ends then (epoch seconds), so it goes on


class RevokeTarget(TypedDict):
    access_workflow_id: str | None  # the workflow to wake, if the grant came from one
    facts: MessageFacts


class AccessError(Refusal):
    """A request cannot be made, decided, cancelled, revoked or seen as asked."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message, status_code, field)


# Submitting --------------------------------------------------------------------------------

def requestable_resources(session: Session) -> list[Resource]:
    return list(session.scalars(sa.select(Resource).order_by(Resource.name)).all())


def prepare_submission(session: Session, settings: Settings, requester: Principal, *, resource_id: int,
                       duration: str, reason: str, extends_grant_id: int | None = None) -> Submission:
    """The workflow input for a valid submission, or AccessError naming the field at fault.
    Something the requester holds already is refused, unless the request extends that grant."""
    resource = session.get(Resource, resource_id)
    if resource is None:
        raise AccessError(422, "Choose a resource from the list.", "resource_id")
    if duration not in DURATIONS:
        raise AccessError(422, "Choose one of the listed durations.", "duration")
    seconds = DURATIONS[duration]
    if not allowed(seconds, resource.max_duration_seconds):
        raise AccessError(422, f"{resource.name} grants at most {describe(resource.max_duration_seconds)}.",
                          "duration")
    pending = session.scalar(sa.select(AccessRequest.id).where(
        AccessRequest.requester_id == requester.id, AccessRequest.resource_id == resource_id,
        AccessRequest.status == RequestStatus.requested))
    if pending is not None:
        raise AccessError(422, f"You already have a pending request for {resource.name} (#{pending}).",
                          "resource_id")
    if extends_grant_id is not None:
        if not extendable(session.get(Grant, extends_grant_id), requester.id, resource_id):
            raise AccessError(422, f"There is no time-bound access to {resource.name} of yours in force to extend.",
                              "resource_id")
        if seconds is None:
            raise AccessError(422, "An extension adds a length of time: choose one.", "duration")
    elif (held := held_grant(session, requester.id, resource_id)) is not None:
        until = "permanently" if held.expires_at is None else f"until {held.expires_at:%Y-%m-%d %H:%M} UTC"
        raise AccessError(422, f"You already hold {resource.name} {until}."
                          + ("" if held.expires_at is None else " Extend it instead."), "resource_id")
    return {**submission(settings, requester.id, resource_id, seconds, reason, token_id=requester.token_id,
                         channel=acting_channel()),
            **({"extends_grant_id": extends_grant_id} if extends_grant_id is not None else {})}  # type: ignore[typeddict-item]


def submission(settings: Settings, requester_id: int, resource_id: int, seconds: int | None,
               reason: str, *, token_id: int | None = None, channel: Via | None = None) -> Submission:
    return Submission(requester_id=requester_id, resource_id=resource_id, duration_seconds=seconds, reason=reason,
                      reminder=reminder_policy(settings), token_id=token_id, channel=channel)


def reminder_policy(settings: Settings) -> ReminderPolicy:
    return ReminderPolicy(min_grant_seconds=settings.grant_reminder_min_seconds,
                          before_seconds=settings.grant_reminder_before_seconds)


def request_id_for_workflow(session: Session, workflow_id: str) -> int | None:
    return session.scalar(sa.select(AccessRequest.id).where(AccessRequest.workflow_id == workflow_id))


# Deciding ------------------------------------------------------------------------------------

def is_approver(session: Session, user_id: int, resource_id: int) -> bool:
    return session.scalar(sa.select(ResourceApprover.user_id).where(
        ResourceApprover.resource_id == resource_id, ResourceApprover.user_id == user_id)) is not None


OWN_REQUEST = "You cannot decide on your own request."
NOT_AN_APPROVER = "You are not an approver of this resource."
SERVICE_ACCOUNT = "A service account cannot decide requests."


def decision_refusal(principal: Principal, *, requester_id: int, approves_resource: bool) -> str | None:
    """The deciding rule, without the database: why `principal` may not approve or reject a
    request, or None when they may. Never on your own request; admins decide any other,
    approvers those of the resources they approve. The pages and the workflow both ask it."""
    if principal.id == requester_id:
        return OWN_REQUEST
    if principal.service:
        return SERVICE_ACCOUNT
    if principal.is_admin or (principal.has_role(Role.approver) and approves_resource):
        return None
    return NOT_AN_APPROVER


def decides(principal: Principal, *, requester_id: int, approves_resource: bool) -> bool:
    return decision_refusal(principal, requester_id=requester_id, approves_resource=approves_resource) is None


def may_decide(session: Session, principal: Principal, request: AccessRequest) -> bool:
    return decides(principal, requester_id=request.requester_id,
                   approves_resource=is_approver(session, principal.id, request.resource_id))


def may_cancel(principal: Principal, *, requester_id: int, status: str) -> bool:
    """Only the requester, and only while the request waits for decisions."""
    return status == RequestStatus.requested and principal.id == requester_id


def may_view(session: Session, principal: Principal, request: AccessRequest) -> bool:
    return (principal.is_admin or principal.id == request.requester_id
            or is_approver(session, principal.id, request.resource_id))


@dataclass(frozen=True)
class Viewer:
    """Who looks at a list, with the resources they approve loaded once, so the rules
    above can be applied to many rows: in SQL (`visible_to`) or per row (`decides`)."""

    principal: Principal
    approves: frozenset[int]


def viewer(session: Session, principal: Principal) -> Viewer:
    approves = session.scalars(sa.select(ResourceApprover.resource_id).where(ResourceApprover.user_id == principal.id))
    return Viewer(principal, frozenset(approves.all()))


def visible_to(viewer: Viewer, owner: Any = AccessRequest.requester_id,
               resource: Any = AccessRequest.resource_id) -> sa.ColumnElement[bool]:
    """`may_view` as a WHERE clause, so lists filter in SQL: admins see everything, others
    what they asked for and what concerns the resources they approve. `owner` and `resource`
    name the columns to test, so grants are scoped the same way as requests. The resource
    ids are written out, which lets the planner pick an index for each side of the OR."""
    if viewer.principal.is_admin:
        return sa.true()
    mine = owner == viewer.principal.id
    return sa.or_(mine, resource.in_(sorted(viewer.approves))) if viewer.approves else mine


def check_decision(session: Session, principal: Principal, request_id: int, kind: DecisionKind) -> str:
    """The workflow to message for `kind` (approve, reject, cancel), or AccessError."""
    request = session.get(AccessRequest, request_id)
    if request is None or not may_view(session, principal, request):
        raise AccessError(404, f"No request #{request_id}.")
    if kind == "cancel":
        if principal.id != request.requester_id:
            raise AccessError(403, "Only the person who asked can cancel a request.")
    else:
        refusal = decision_refusal(principal, requester_id=request.requester_id,
                                   approves_resource=is_approver(session, principal.id, request.resource_id))
        if refusal:
            raise AccessError(403, refusal)
    if request.status != RequestStatus.requested:
        raise AccessError(409, f"This request is already {request.status}.")
    return request.workflow_id


def check_revoke(session: Session, grant_id: int) -> RevokeTarget:
    """What revoke_grant_workflow needs about an active grant, or AccessError."""
    row = session.execute(
        sa.select(Grant, AccessRequest, Resource, User)
        .join(Resource, Resource.id == Grant.resource_id).join(User, User.id == Grant.user_id)
        .outerjoin(AccessRequest, AccessRequest.id == Grant.request_id)
        .where(Grant.id == grant_id)
    ).first()
    if row is None:
        raise AccessError(404, f"No grant #{grant_id}.")
    grant, request, resource, holder = row
    if grant.revoked_at is not None:
        raise AccessError(409, "This grant has already ended.")
    return RevokeTarget(access_workflow_id=request.workflow_id if request else None,
                        facts=MessageFacts(request_id=grant.request_id, requester=holder.email, resource=resource.name))


# Reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ApprovalRow:
    approver: str
    decision: str
    comment: str
    counted: bool
    created_at: datetime


@dataclass
class RequestView:
    request: AccessRequest
    requester: User
    resource: Resource
    approvers: list[User]
    approvals: list[ApprovalRow]
    grant: Grant | None
    history: list[AuditEvent]
    tasks: list[TaskRow] = field(default_factory=list)  # the grant's fulfilment tasks
    can_decide: bool = False
    can_cancel: bool = False
    can_revoke: bool = False
    approvals_counted: int = field(default=0)
    extends: Grant | None = None  # the grant this request extends


def request_view(session: Session, principal: Principal, request_id: int) -> RequestView:
    request = session.get(AccessRequest, request_id)
    if request is None or not may_view(session, principal, request):
        raise AccessError(404, f"No request #{request_id}.")
    approvals = session.execute(
        sa.select(User.name, Approval.decision, Approval.comment, Approval.counted, Approval.created_at)
        .join(User, User.id == Approval.approver_id).where(Approval.request_id == request_id)
        .order_by(Approval.id)
    ).all()
    grant = session.scalar(sa.select(Grant).where(Grant.request_id == request_id))
    tasks = tasks_of_grant(session, grant.id) if grant else []  # type: ignore[arg-type]
    subjects = ([f"request:{request_id}"] + ([f"grant:{grant.id}"] if grant else [])
                + [f"task:{row.task.id}" for row in tasks])
    if request.extends_grant_id:  # an extension: the grant it moved says so
        subjects.append(f"grant:{request.extends_grant_id}")
    extended = f"grant:{request.extends_grant_id}"

    def belongs(event: AuditEvent) -> bool:
        """Of the grant this request extends, only its extension by this request belongs here."""
        if event.subject != extended or (grant is not None and grant.id == request.extends_grant_id):
            return True
        return event.action == "grant.extended" and (event.details or {}).get("request") == request_id

    history = [event for event in session.scalars(sa.select(AuditEvent).where(
        AuditEvent.subject.in_(subjects)).order_by(AuditEvent.id)) if belongs(event)]  # type: ignore[attr-defined]
    approvers = approvers_of(session, request.resource_id)
    pending = request.status == RequestStatus.requested
    view = RequestView(
        request=request, requester=session.get(User, request.requester_id),  # type: ignore[arg-type]
        resource=session.get(Resource, request.resource_id), approvers=approvers,  # type: ignore[arg-type]
        approvals=[ApprovalRow(*row) for row in approvals], grant=grant, history=history, tasks=tasks,
        can_decide=pending and may_decide(session, principal, request),
        can_cancel=may_cancel(principal, requester_id=request.requester_id, status=request.status),
        can_revoke=principal.is_admin and grant is not None and grant.revoked_at is None,
        extends=session.get(Grant, request.extends_grant_id) if request.extends_grant_id else None,
    )
    view.approvals_counted = len({a.approver for a in view.approvals if a.decision == "approve" and a.counted})
    return view
