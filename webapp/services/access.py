"""Access requests as people see them: checks before a workflow is started or messaged,
and the read models of the request pages.

The workflow (`webapp.workflows.access`) is the authority on every state change; the
checks here give a clear answer early (a 4xx with a reason) instead of a message the
workflow would have to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.services.identity import Principal
from webapp.config import Settings
from webapp.core.durations import DURATIONS, allowed, describe
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


class AccessError(Exception):
    """A request cannot be made or decided as asked; `status_code` says how to answer."""

    def __init__(self, status_code: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.field = field


# Submitting --------------------------------------------------------------------------------

def requestable_resources(session: Session) -> list[Resource]:
    return list(session.scalars(sa.select(Resource).order_by(Resource.name)).all())


def prepare_submission(session: Session, settings: Settings, requester: Principal, *, resource_id: int,
                       duration: str, reason: str) -> dict[str, Any]:
    """The workflow input for a valid submission, or AccessError naming the field at fault."""
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
    return submission(settings, requester.id, resource_id, seconds, reason)


def submission(settings: Settings, requester_id: int, resource_id: int, seconds: int | None,
               reason: str) -> dict[str, Any]:
    """The access workflow's input: the same for a person's form and an operator's batch."""
    return {"requester_id": requester_id, "resource_id": resource_id, "duration_seconds": seconds,
            "reason": reason, "reminder": reminder_policy(settings)}


def reminder_policy(settings: Settings) -> dict[str, int]:
    """Fixed into the workflow's input, so a replay keeps the policy it started with."""
    return {"min_grant_seconds": settings.grant_reminder_min_seconds,
            "before_seconds": settings.grant_reminder_before_seconds}


def request_id_for_workflow(session: Session, workflow_id: str) -> int | None:
    return session.scalar(sa.select(AccessRequest.id).where(AccessRequest.workflow_id == workflow_id))


# Deciding ------------------------------------------------------------------------------------

def _is_approver(session: Session, user_id: int, resource_id: int) -> bool:
    return session.scalar(sa.select(ResourceApprover.user_id).where(
        ResourceApprover.resource_id == resource_id, ResourceApprover.user_id == user_id)) is not None


def decides(principal: Principal, *, requester_id: int, approves_resource: bool) -> bool:
    """The deciding rule, without the database: never on your own request; admins on any
    other, approvers on those of the resources they approve."""
    if principal.id == requester_id:
        return False
    return principal.is_admin or (principal.has_role(Role.approver) and approves_resource)


def may_decide(session: Session, principal: Principal, request: AccessRequest) -> bool:
    return principal.id != request.requester_id and decides(
        principal, requester_id=request.requester_id,
        approves_resource=_is_approver(session, principal.id, request.resource_id))


def may_cancel(principal: Principal, *, requester_id: int, status: str) -> bool:
    """Only the requester, and only while the request waits for decisions."""
    return status == RequestStatus.requested and principal.id == requester_id


def may_view(session: Session, principal: Principal, request: AccessRequest) -> bool:
    return (principal.is_admin or principal.id == request.requester_id
            or _is_approver(session, principal.id, request.resource_id))


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


def check_decision(session: Session, principal: Principal, request_id: int, kind: str) -> str:
    """The workflow to message for `kind` (approve, reject, cancel), or AccessError."""
    request = session.get(AccessRequest, request_id)
    if request is None or not may_view(session, principal, request):
        raise AccessError(404, f"No request #{request_id}.")
    if kind == "cancel":
        if principal.id != request.requester_id:
            raise AccessError(403, "Only the person who asked can cancel a request.")
    elif principal.id == request.requester_id:
        raise AccessError(403, "You cannot decide on your own request.")
    elif not may_decide(session, principal, request):
        raise AccessError(403, "You are not an approver of this resource.")
    if request.status != RequestStatus.requested:
        raise AccessError(409, f"This request is already {request.status}.")
    return request.workflow_id


def check_revoke(session: Session, grant_id: int) -> dict[str, Any]:
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
    return {
        "access_workflow_id": request.workflow_id if request else None,
        "facts": {"request_id": grant.request_id, "requester": holder.email, "resource": resource.name},
    }


# Reading ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestRow:
    id: int
    requester: str
    resource: str
    reason: str
    duration: str
    status: str
    created_at: datetime
    pending_until: datetime | None


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
    can_decide: bool = False
    can_cancel: bool = False
    can_revoke: bool = False
    approvals_counted: int = field(default=0)


def _rows(session: Session, query: Any) -> list[RequestRow]:
    rows = session.execute(query).all()
    return [RequestRow(r.id, r.requester, r.resource, r.reason, describe(r.duration_seconds), r.status,
                       r.created_at, r.pending_until) for r in rows]


def _request_query() -> Any:
    return (sa.select(AccessRequest.id, User.name.label("requester"), Resource.name.label("resource"),  # type: ignore[attr-defined]
                      AccessRequest.reason, AccessRequest.duration_seconds, AccessRequest.status,
                      AccessRequest.created_at, AccessRequest.pending_until)
            .join(User, User.id == AccessRequest.requester_id)
            .join(Resource, Resource.id == AccessRequest.resource_id))


def my_requests(session: Session, user_id: int, *, limit: int = 200) -> list[RequestRow]:
    return _rows(session, _request_query().where(AccessRequest.requester_id == user_id)
                 .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc()).limit(limit))  # type: ignore[attr-defined, union-attr]


def waiting_for(session: Session, principal: Principal, *, limit: int = 200) -> list[RequestRow]:
    """Pending requests this person may decide and has not approved yet."""
    query = _request_query().where(AccessRequest.status == RequestStatus.requested,
                                   AccessRequest.requester_id != principal.id)
    if not principal.is_admin:
        query = query.where(AccessRequest.resource_id.in_(  # type: ignore[attr-defined]
            sa.select(ResourceApprover.resource_id).where(ResourceApprover.user_id == principal.id)))
    already = sa.select(Approval.request_id).where(Approval.approver_id == principal.id, Approval.counted)
    query = query.where(AccessRequest.id.not_in(already))  # type: ignore[union-attr]
    return _rows(session, query.order_by(AccessRequest.created_at, AccessRequest.id).limit(limit))


@dataclass(frozen=True)
class AccessRow:
    grant_id: int
    request_id: int | None
    resource: str
    kind: str
    granted_at: datetime
    expires_at: datetime | None


def grant_active(now: datetime, grant: Any = Grant) -> sa.ColumnElement[bool]:
    """`grant` (the Grant table or an alias of it) gives access at `now`: not revoked, not expired."""
    return sa.and_(grant.revoked_at.is_(None), sa.or_(grant.expires_at.is_(None), grant.expires_at > now))


def my_access(session: Session, user_id: int, *, now: datetime) -> list[AccessRow]:
    rows = session.execute(
        sa.select(Grant.id, Grant.request_id, Resource.name, Resource.kind, Grant.granted_at, Grant.expires_at)
        .join(Resource, Resource.id == Grant.resource_id)
        .where(Grant.user_id == user_id, grant_active(now))
        .order_by(Resource.name)
    ).all()
    return [AccessRow(*row) for row in rows]


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
    subjects = [f"request:{request_id}"] + ([f"grant:{grant.id}"] if grant else [])
    history = list(session.scalars(sa.select(AuditEvent).where(AuditEvent.subject.in_(subjects))  # type: ignore[attr-defined]
                                   .order_by(AuditEvent.id)).all())
    approvers = list(session.scalars(
        sa.select(User).join(ResourceApprover, ResourceApprover.user_id == User.id)
        .where(ResourceApprover.resource_id == request.resource_id).order_by(User.name)).all())
    pending = request.status == RequestStatus.requested
    view = RequestView(
        request=request, requester=session.get(User, request.requester_id),  # type: ignore[arg-type]
        resource=session.get(Resource, request.resource_id), approvers=approvers,  # type: ignore[arg-type]
        approvals=[ApprovalRow(*row) for row in approvals], grant=grant, history=history,
        can_decide=pending and may_decide(session, principal, request),
        can_cancel=may_cancel(principal, requester_id=request.requester_id, status=request.status),
        can_revoke=principal.is_admin and grant is not None and grant.revoked_at is None,
    )
    view.approvals_counted = len({a.approver for a in view.approvals if a.decision == "approve" and a.counted})
    return view
