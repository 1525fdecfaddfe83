"""Every state change of an access request and its grant, each with its audit event.

Plain functions over the caller's session; the request's workflow
(`webapp.workflows.access`) runs each one as a DBOS datasource transaction, so the change,
its audit event and DBOS's record of the step commit together and a replay after a crash
never writes twice. Rows are locked (`with_for_update`) where two paths may race: an
early revoke and the expiry, two decisions, two submissions by one person.

Deciding applies `access.decision_refusal`, the rule the pages check before sending a
decision: a message that should not count is recorded (an approval with counted=False and
a `decision.ignored` event) and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.durations import allowed, describe
from webapp.core.models import (
    AccessRequest,
    Approval,
    Decision,
    DecisionLinkUse,
    ErrorRecord,
    Grant,
    RequestStatus,
    Resource,
    ResourceApprover,
    User,
    utcnow,
)
from webapp.services.access import (
    DecisionMessage,
    DecisionOutcome,
    EndedGrant,
    GrantFacts,
    Refused,
    RequestFacts,
    Submission,
    decision_refusal,
    is_approver,
)
from webapp.services.audit import Action, record_event
from webapp.services.fulfilment import plan_add, plan_remove, task_workflow_id
from webapp.services.identity import principal_of

ERROR_SOURCE = "workflow.access"
# A grant's workflow wakes at its end by its own clock: an end still this far ahead was moved.
EXPIRY_SLACK = timedelta(seconds=1)


def _locked_request(session: Session, request_id: int) -> AccessRequest:
    """The request row, locked until commit: its transitions never interleave."""
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None:
        raise LookupError(f"access request {request_id} does not exist")
    return request


def record_request(session: Session, submission: Submission, *, workflow_id: str) -> RequestFacts | Refused:
    """Insert the request (status requested) with its audit event; refuse a second pending
    request by the same person for the same resource. Returns the facts later steps need."""
    # Locking the requester serialises their submissions, so two cannot both pass the
    # duplicate check below.
    requester = session.get(User, submission["requester_id"], with_for_update=True)
    resource = session.get(Resource, submission["resource_id"])
    if requester is None or resource is None or not requester.active:
        return Refused(refused="The requester or the resource no longer exists.")
    duplicate = session.scalar(
        sa.select(AccessRequest.id).where(
            AccessRequest.requester_id == requester.id, AccessRequest.resource_id == resource.id,
            AccessRequest.status == RequestStatus.requested,
        )
    )
    if duplicate is not None:
        return Refused(refused=f"You already have a pending request for {resource.name}.", duplicate_of=duplicate)
    if not allowed(submission["duration_seconds"], resource.max_duration_seconds):
        return Refused(refused=f"{resource.name} grants at most {describe(resource.max_duration_seconds)}.")
    now = utcnow()
    request = AccessRequest(
        requester_id=requester.id, resource_id=resource.id, reason=submission["reason"],  # type: ignore[arg-type]
        duration_seconds=submission["duration_seconds"], status=RequestStatus.requested,
        workflow_id=workflow_id, created_at=now, updated_at=now,
        pending_until=now + timedelta(seconds=resource.pending_ttl_seconds),
        extends_grant_id=submission.get("extends_grant_id"),
    )
    session.add(request)
    session.flush()
    assert request.id is not None and request.pending_until is not None
    record_event(session, actor=requester.email, actor_id=requester.id, action=Action.REQUEST_SUBMITTED,
                 subject=f"request:{request.id}",
                 details={"resource": resource.name, "duration": describe(request.duration_seconds),
                          "reason": request.reason})
    approvers = session.scalars(
        sa.select(User.email).join(ResourceApprover, ResourceApprover.user_id == User.id)
        .where(ResourceApprover.resource_id == resource.id, User.active, User.id != requester.id)
        .order_by(User.email)
    ).all()
    return RequestFacts(
        request_id=request.id, requester=requester.email, requester_name=requester.name, resource=resource.name,
        reason=request.reason, duration_seconds=request.duration_seconds, auto_approve=resource.auto_approve,
        approvals_required=resource.approvals_required, approvers=list(approvers),
        pending_until=request.pending_until.timestamp(), reminder=submission["reminder"],
        extends_grant_id=request.extends_grant_id,
    )


def _refusal(session: Session, request: AccessRequest, actor: User | None) -> str | None:
    """Why `actor` may not approve or reject this request, or None when they may."""
    if actor is None or not actor.active:
        return "unknown or inactive approver"
    return decision_refusal(principal_of(actor), requester_id=request.requester_id,
                            approves_resource=is_approver(session, actor.id, request.resource_id))  # type: ignore[arg-type]


def apply_decision(session: Session, request_id: int, message: DecisionMessage) -> DecisionOutcome:
    """Apply one decision message. The first decisive message wins; late, repeated or
    unauthorised ones are recorded (approvals with counted=False) and change nothing."""
    request = _locked_request(session, request_id)
    actor = session.get(User, message.get("actor_id"))
    kind = message.get("kind")
    comment = str(message.get("comment") or "")[:1000]
    subject = f"request:{request_id}"
    actor_name = actor.email if actor else "unknown"
    required = session.scalar(sa.select(Resource.approvals_required).where(Resource.id == request.resource_id)) or 1

    def outcome(applied: bool, note: str = "") -> DecisionOutcome:
        counted = session.scalar(
            sa.select(sa.func.count(sa.distinct(Approval.approver_id))).where(
                Approval.request_id == request_id, Approval.decision == Decision.approve, Approval.counted
            )
        ) or 0
        return DecisionOutcome(status=request.status, applied=applied, note=note, approvals=counted, required=required)

    def ignored(note: str) -> DecisionOutcome:
        if kind in (Decision.approve, Decision.reject) and actor is not None:
            session.add(Approval(request_id=request_id, approver_id=actor.id, decision=kind,  # type: ignore[arg-type]
                                 comment=comment, counted=False))
        record_event(session, actor=actor_name, actor_id=actor.id if actor else None, action=Action.DECISION_IGNORED,
                     subject=subject, details={"kind": kind, "why": note})
        return outcome(False, note)

    if request.status != RequestStatus.requested:
        return ignored(f"the request is already {request.status}")
    now = utcnow()
    if kind == "cancel":
        if actor is None or actor.id != request.requester_id:
            return ignored("only the requester can cancel")
        request.status, request.decided_at, request.decided_by_id, request.updated_at = (
            RequestStatus.canceled, now, actor.id, now)
        record_event(session, actor=actor.email, actor_id=actor.id, action=Action.REQUEST_CANCELED, subject=subject)
        return outcome(True)
    if kind not in (Decision.approve, Decision.reject):
        return ignored(f"unknown decision {kind!r}")
    refusal = _refusal(session, request, actor)
    if refusal:
        return ignored(refusal)
    assert actor is not None
    link_id = message.get("link_id")
    if link_id:  # an emailed link: it decides once, in this transaction
        if session.get(DecisionLinkUse, link_id) is not None:
            return ignored("this link has been used already")
        session.add(DecisionLinkUse(link_id=link_id, request_id=request_id, user_id=actor.id, decision=kind))
    if kind == Decision.reject:
        session.add(Approval(request_id=request_id, approver_id=actor.id, decision=kind, comment=comment))  # type: ignore[arg-type]
        request.status, request.decided_at, request.decided_by_id, request.updated_at = (
            RequestStatus.rejected, now, actor.id, now)
        record_event(session, actor=actor.email, actor_id=actor.id, action=Action.REQUEST_REJECTED, subject=subject,
                     details={"comment": comment, **_link(link_id)})
        return outcome(True)
    already = session.scalar(sa.select(Approval.id).where(
        Approval.request_id == request_id, Approval.approver_id == actor.id, Approval.counted))
    if already is not None:
        return ignored("this approver has already approved")
    session.add(Approval(request_id=request_id, approver_id=actor.id, decision=kind, comment=comment))  # type: ignore[arg-type]
    session.flush()
    result = outcome(True)
    if result["approvals"] >= required:
        request.status, request.decided_at, request.decided_by_id, request.updated_at = (
            RequestStatus.approved, now, actor.id, now)
        record_event(session, actor=actor.email, actor_id=actor.id, action=Action.REQUEST_APPROVED, subject=subject,
                     details={"approvals": result["approvals"], "required": required, "comment": comment,
                              **_link(link_id)})
        result["status"] = request.status
    else:
        request.updated_at = now
        record_event(session, actor=actor.email, actor_id=actor.id, action=Action.REQUEST_APPROVAL_RECORDED,
                     subject=subject, details={"approvals": result["approvals"], "required": required,
                                               **_link(link_id)})
    return result


def _link(link_id: str | None) -> dict[str, str]:
    """The audit detail naming the emailed link a decision was made with, if any."""
    return {"link": link_id} if link_id else {}


def approve_automatically(session: Session, request_id: int) -> str:
    request = _locked_request(session, request_id)
    if request.status == RequestStatus.requested:
        now = utcnow()
        request.status, request.decided_at, request.updated_at = RequestStatus.approved, now, now
        record_event(session, actor="workflow", action=Action.REQUEST_AUTO_APPROVED, subject=f"request:{request_id}")
    return request.status


def expire_request(session: Session, request_id: int) -> str:
    """The pending TTL passed without a decision (a no-op if something else ended it)."""
    request = _locked_request(session, request_id)
    if request.status == RequestStatus.requested:
        request.status = RequestStatus.expired
        request.updated_at = request.decided_at = utcnow()
        record_event(session, actor="workflow", action=Action.REQUEST_EXPIRED, subject=f"request:{request_id}")
    return request.status


def create_grant(session: Session, request_id: int, *, workflow_id: str | None) -> GrantFacts:
    request = _locked_request(session, request_id)
    existing = session.scalar(sa.select(Grant).where(Grant.request_id == request_id))
    if existing is not None:  # defensive: the unique request_id already forbids a second grant
        grant = existing
        task = task_workflow_id(grant.id, "add") if grant.state == "provisioning" else None  # type: ignore[arg-type]
    else:
        now = utcnow()
        expires = now + timedelta(seconds=request.duration_seconds) if request.duration_seconds else None
        grant = Grant(request_id=request_id, user_id=request.requester_id, resource_id=request.resource_id,
                      granted_at=now, expires_at=expires, granted_by_workflow=workflow_id)
        session.add(grant)
        session.flush()
        record_event(session, actor="workflow", action=Action.GRANT_CREATED, subject=f"grant:{grant.id}",
                     details={"request": request_id, "user": request.requester_id,
                              "expires_at": expires.isoformat() if expires else None})
        task = plan_add(session, grant)
    assert grant.id is not None
    return GrantFacts(grant_id=grant.id, expires_at=grant.expires_at.timestamp() if grant.expires_at else None,
                      task=task)


def end_grant(session: Session, grant_id: int, reason: str, *, workflow_id: str | None, actor_id: int | None = None,
              note: str = "") -> EndedGrant:
    """Revoke the grant now, with a remove task when an agent holds its membership; `ended`
    False if it was already revoked (by the other path). At its expiry (`reason` "expired"),
    a grant an extension moved meanwhile goes on: `extended_to` says until when."""
    grant = session.get(Grant, grant_id, with_for_update=True)  # expiry, early revoke and extension may race
    if grant is None or grant.revoked_at is not None:
        return EndedGrant(ended=False, task=None)
    now = utcnow()
    if reason == "expired" and grant.expires_at is not None and grant.expires_at > now + EXPIRY_SLACK:
        return EndedGrant(ended=False, task=None, extended_to=grant.expires_at.timestamp())
    grant.revoked_at, grant.revoked_by_workflow, grant.revoked_by_id = now, workflow_id, actor_id
    actor = session.get(User, actor_id) if actor_id else None
    if grant.request_id is not None:
        request = _locked_request(session, grant.request_id)
        request.status, request.updated_at = RequestStatus.revoked, now
    # The approved extensions of the grant end with it.
    session.execute(sa.update(AccessRequest).where(
        AccessRequest.extends_grant_id == grant_id, AccessRequest.status == RequestStatus.approved,  # type: ignore[arg-type]
    ).values(status=RequestStatus.revoked, updated_at=now))
    record_event(session, actor=actor.email if actor else "workflow", actor_id=actor_id, action=Action.GRANT_REVOKED,
                 subject=f"grant:{grant_id}", details={"request": grant.request_id, "reason": reason, "note": note})
    return EndedGrant(ended=True, task=plan_remove(session, grant))


def record_failure(session: Session, request_id: int, error_type: str, error_message: str, *,
                   workflow_id: str | None) -> None:
    """The request shows the failure instead of hanging; the error log has the details."""
    request = _locked_request(session, request_id)
    request.status, request.updated_at = RequestStatus.failed, utcnow()
    request.error = f"{error_type}: {error_message}"[:2000]
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id, request_id=request_id,
                            message={"error_type": error_type, "message": error_message[:4000],
                                     "request_id": request_id}))
    record_event(session, actor="workflow", action=Action.REQUEST_FAILED, subject=f"request:{request_id}",
                 details={"error_type": error_type})


class Overdue(TypedDict):
    id: int
    workflow_id: str


def overdue_requests(session: Session, before: datetime, *, limit: int) -> list[Overdue]:
    """Pending requests whose TTL ended before `before`, oldest first."""
    rows = session.execute(
        sa.select(AccessRequest.id, AccessRequest.workflow_id)
        .where(AccessRequest.status == RequestStatus.requested, AccessRequest.pending_until < before)  # type: ignore[operator]
        .order_by(AccessRequest.pending_until).limit(limit)
    ).all()
    return [Overdue(id=row.id, workflow_id=row.workflow_id) for row in rows]


def expire_orphan(session: Session, request_id: int) -> bool:
    """Expire one request nobody waits for (a no-op if it was decided meanwhile)."""
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None or request.status != RequestStatus.requested:
        return False
    now = utcnow()
    request.status, request.updated_at, request.decided_at = RequestStatus.expired, now, now
    record_event(session, actor="sweep", action=Action.REQUEST_EXPIRED, subject=f"request:{request_id}",
                 details={"reason": "pending TTL passed with no workflow waiting"})
    return True
