"""The access-request workflow: one durable workflow per request.

    access_request_workflow(submission)
      1. record_request        transaction: the request and its audit event, or "duplicate"
      2. auto-approve, or notify the approvers and wait: DBOS.recv("decision") until the
         pending TTL; each message goes through apply_decision (a transaction), which
         counts distinct approvals, lets one rejection end it, lets the requester cancel,
         and records late or repeated messages without acting on them
      3. approved: create_grant, tell the requester; a time-bound grant gets a reminder
         (1 h before the end for grants of 8 h or more), a durable wait until the end,
         then end_grant and a last message
    revoke_grant_workflow(grant_id, ...)
      an early revoke: end_grant, tell the holder, wake the access workflow if it waits

Every state change and its audit event commit in one datasource transaction, whose
result DBOS records in that same transaction: a replay after a crash reads the result
instead of writing again. Workflow inputs and step results are plain dicts.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from dbos import DBOS
from dbos._error import DBOSWorkflowCancelledError

from webapp.services.audit import record_event
from webapp.core.db import datasource
from webapp.core.durations import allowed, describe
from webapp.core.models import (
    AccessRequest,
    Approval,
    Decision,
    ErrorRecord,
    Grant,
    RequestStatus,
    Resource,
    ResourceApprover,
    Role,
    User,
    utcnow,
)
from webapp.workflows.control import fork_label
from webapp.workflows.notifications import Message, request_link, send_notifications

log = logging.getLogger(__name__)
DECISION_TOPIC = "decision"
REVOKE_TOPIC = "revoke"
RECORDED_EVENT = "recorded"


def message_event(message_id: str) -> str:
    """The event key under which the workflow publishes what a message did."""
    return f"message:{message_id}"


def request_workflow_id(requester_id: int, form_key: str) -> str:
    """Derived from the key the form carries, so a double-clicked submit starts one workflow."""
    return f"request-{requester_id}-{form_key}"


# Transactions ------------------------------------------------------------------------------

def _session() -> Any:
    return datasource.session()


def _request(session: Any, request_id: int) -> AccessRequest:
    """The request row, locked until commit: its transitions never interleave."""
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None:
        raise LookupError(f"access request {request_id} does not exist")
    return request


def _approver_ids(session: Any, resource_id: int) -> set[int]:
    return set(session.scalars(sa.select(ResourceApprover.user_id).where(ResourceApprover.resource_id == resource_id)))


@datasource.transaction()
def record_request(submission: dict[str, Any]) -> dict[str, Any]:
    """Insert the request (status requested) with its audit event; refuse a second pending
    request by the same person for the same resource. Returns the facts later steps need."""
    session = _session()
    # Locking the requester serialises their submissions, so two cannot both pass the
    # duplicate check below.
    requester = session.get(User, submission["requester_id"], with_for_update=True)
    resource = session.get(Resource, submission["resource_id"])
    if requester is None or resource is None or not requester.active:
        return {"refused": "The requester or the resource no longer exists."}
    duplicate = session.scalar(
        sa.select(AccessRequest.id).where(
            AccessRequest.requester_id == requester.id, AccessRequest.resource_id == resource.id,
            AccessRequest.status == RequestStatus.requested,
        )
    )
    if duplicate is not None:
        return {"refused": f"You already have a pending request for {resource.name}.", "duplicate_of": duplicate}
    if not allowed(submission["duration_seconds"], resource.max_duration_seconds):
        return {"refused": f"{resource.name} grants at most {describe(resource.max_duration_seconds)}."}
    now = utcnow()
    request = AccessRequest(
        requester_id=requester.id, resource_id=resource.id, reason=submission["reason"],  # type: ignore[arg-type]
        duration_seconds=submission["duration_seconds"], status=RequestStatus.requested,
        workflow_id=DBOS.workflow_id, created_at=now, updated_at=now,  # type: ignore[arg-type]
        pending_until=now + timedelta(seconds=resource.pending_ttl_seconds),
    )
    session.add(request)
    session.flush()
    record_event(session, actor=requester.email, actor_id=requester.id, action="request.submitted",
                 subject=f"request:{request.id}",
                 details={"resource": resource.name, "duration": describe(request.duration_seconds),
                          "reason": request.reason})
    approvers = session.scalars(
        sa.select(User.email).join(ResourceApprover, ResourceApprover.user_id == User.id)
        .where(ResourceApprover.resource_id == resource.id, User.active, User.id != requester.id)
        .order_by(User.email)
    ).all()
    return {
        "request_id": request.id,
        "requester": requester.email,
        "requester_name": requester.name,
        "resource": resource.name,
        "reason": request.reason,
        "duration_seconds": request.duration_seconds,
        "auto_approve": resource.auto_approve,
        "approvals_required": resource.approvals_required,
        "approvers": list(approvers),
        "pending_until": request.pending_until.timestamp(),  # type: ignore[union-attr]
        "reminder": submission["reminder"],
    }


def _may_decide(session: Any, request: AccessRequest, actor: User | None) -> str | None:
    """Why `actor` may not approve or reject this request, or None when they may."""
    if actor is None or not actor.active:
        return "unknown or inactive approver"
    if actor.id == request.requester_id:
        return "an approver cannot decide on their own request"
    if actor.role != Role.admin and actor.id not in _approver_ids(session, request.resource_id):
        return "not an approver of this resource"
    return None


@datasource.transaction()
def apply_decision(request_id: int, message: dict[str, Any]) -> dict[str, Any]:
    """Apply one decision message. The first decisive message wins; late, repeated or
    unauthorised ones are recorded (approvals with counted=False) and change nothing."""
    session = _session()
    request = _request(session, request_id)
    actor = session.get(User, message.get("actor_id"))
    kind = message.get("kind")
    comment = str(message.get("comment") or "")[:1000]
    subject = f"request:{request_id}"
    actor_name = actor.email if actor else "unknown"
    required = session.scalar(sa.select(Resource.approvals_required).where(Resource.id == request.resource_id)) or 1

    def outcome(applied: bool, note: str = "") -> dict[str, Any]:
        counted = session.scalar(
            sa.select(sa.func.count(sa.distinct(Approval.approver_id))).where(
                Approval.request_id == request_id, Approval.decision == Decision.approve, Approval.counted
            )
        ) or 0
        return {"status": request.status, "applied": applied, "note": note, "approvals": counted, "required": required}

    def ignored(note: str) -> dict[str, Any]:
        if kind in (Decision.approve, Decision.reject) and actor is not None:
            session.add(Approval(request_id=request_id, approver_id=actor.id, decision=kind,  # type: ignore[arg-type]
                                 comment=comment, counted=False))
        record_event(session, actor=actor_name, actor_id=actor.id if actor else None, action="decision.ignored",
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
        record_event(session, actor=actor.email, actor_id=actor.id, action="request.canceled", subject=subject)
        return outcome(True)
    if kind not in (Decision.approve, Decision.reject):
        return ignored(f"unknown decision {kind!r}")
    refusal = _may_decide(session, request, actor)
    if refusal:
        return ignored(refusal)
    assert actor is not None
    if kind == Decision.reject:
        session.add(Approval(request_id=request_id, approver_id=actor.id, decision=kind, comment=comment))  # type: ignore[arg-type]
        request.status, request.decided_at, request.decided_by_id, request.updated_at = (
            RequestStatus.rejected, now, actor.id, now)
        record_event(session, actor=actor.email, actor_id=actor.id, action="request.rejected", subject=subject,
                     details={"comment": comment})
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
        record_event(session, actor=actor.email, actor_id=actor.id, action="request.approved", subject=subject,
                     details={"approvals": result["approvals"], "required": required, "comment": comment})
        result["status"] = request.status
    else:
        request.updated_at = now
        record_event(session, actor=actor.email, actor_id=actor.id, action="request.approval_recorded",
                     subject=subject, details={"approvals": result["approvals"], "required": required})
    return result


@datasource.transaction()
def approve_automatically(request_id: int) -> str:
    session = _session()
    request = _request(session, request_id)
    if request.status == RequestStatus.requested:
        now = utcnow()
        request.status, request.decided_at, request.updated_at = RequestStatus.approved, now, now
        record_event(session, actor="workflow", action="request.auto_approved", subject=f"request:{request_id}")
    return request.status


@datasource.transaction()
def expire_request(request_id: int) -> str:
    """The pending TTL passed without a decision (a no-op if something else ended it)."""
    session = _session()
    request = _request(session, request_id)
    if request.status == RequestStatus.requested:
        request.status = RequestStatus.expired
        request.updated_at = request.decided_at = utcnow()
        record_event(session, actor="workflow", action="request.expired", subject=f"request:{request_id}")
    return request.status


@datasource.transaction()
def create_grant(request_id: int) -> dict[str, Any]:
    session = _session()
    request = _request(session, request_id)
    existing = session.scalar(sa.select(Grant).where(Grant.request_id == request_id))
    if existing is not None:  # defensive: the unique request_id already forbids a second grant
        grant = existing
    else:
        now = utcnow()
        expires = now + timedelta(seconds=request.duration_seconds) if request.duration_seconds else None
        grant = Grant(request_id=request_id, user_id=request.requester_id, resource_id=request.resource_id,
                      granted_at=now, expires_at=expires, granted_by_workflow=DBOS.workflow_id)
        session.add(grant)
        session.flush()
        record_event(session, actor="workflow", action="grant.created", subject=f"grant:{grant.id}",
                     details={"request": request_id, "user": request.requester_id,
                              "expires_at": expires.isoformat() if expires else None})
    return {"grant_id": grant.id, "expires_at": grant.expires_at.timestamp() if grant.expires_at else None}


@datasource.transaction()
def end_grant(grant_id: int, reason: str, actor_id: int | None = None, note: str = "") -> bool:
    """Revoke the grant now; False if it was already revoked (by the other path)."""
    session = _session()
    grant = session.get(Grant, grant_id, with_for_update=True)  # expiry and early revoke may race
    if grant is None or grant.revoked_at is not None:
        return False
    now = utcnow()
    grant.revoked_at, grant.revoked_by_workflow, grant.revoked_by_id = now, DBOS.workflow_id, actor_id
    actor = session.get(User, actor_id) if actor_id else None
    if grant.request_id is not None:
        request = _request(session, grant.request_id)
        request.status, request.updated_at = RequestStatus.revoked, now
    record_event(session, actor=actor.email if actor else "workflow", actor_id=actor_id, action="grant.revoked",
                 subject=f"grant:{grant_id}", details={"request": grant.request_id, "reason": reason, "note": note})
    return True


@datasource.transaction()
def record_failure(request_id: int, error_type: str, error_message: str) -> None:
    """The request shows the failure instead of hanging; the error log has the details."""
    session = _session()
    request = _request(session, request_id)
    request.status, request.updated_at = RequestStatus.failed, utcnow()
    request.error = f"{error_type}: {error_message}"[:2000]
    session.add(ErrorRecord(source="workflow.access", workflow_id=DBOS.workflow_id, request_id=request_id,
                            message={"error_type": error_type, "message": error_message[:4000],
                                     "request_id": request_id}))
    record_event(session, actor="workflow", action="request.failed", subject=f"request:{request_id}",
                 details={"error_type": error_type})


# Messages ----------------------------------------------------------------------------------

def _message(facts: dict[str, Any], event: str, recipient: str, subject: str, body: str) -> Message:
    request_id = facts["request_id"]
    return Message(request_id=request_id, event=event, recipient=recipient, subject=subject, body=body,
                   link=request_link(request_id), run=fork_label(DBOS.workflow_id))


def _ask_approvers(facts: dict[str, Any]) -> None:
    subject = f"{facts['requester_name']} requests {facts['resource']}"
    body = (f"{facts['requester_name']} ({facts['requester']}) asks for {facts['resource']} "
            f"for {describe(facts['duration_seconds'])}.\n\nReason: {facts['reason']}")
    send_notifications([_message(facts, "request.submitted", approver, subject, body)
                        for approver in facts["approvers"]])


def _tell_requester(facts: dict[str, Any], event: str, subject: str, body: str) -> None:
    send_notifications([_message(facts, event, facts["requester"], subject, body)])


# Workflows ---------------------------------------------------------------------------------

# Waits for days across deploys and restarts, and each restart counts as a recovery
# attempt: DBOS's default limit (100) would one day dead-letter a sleeping grant, which
# would then never be revoked. Its steps are small transactions, not a crash risk.
@DBOS.workflow(max_recovery_attempts=None)
def access_request_workflow(submission: dict[str, Any]) -> str:
    facts = record_request(submission)
    if "refused" in facts or not facts["auto_approve"]:
        DBOS.set_event(RECORDED_EVENT, facts)  # the submitting page can show the request now
    if "refused" in facts:
        return "refused"
    try:
        status = _wait_for_decision(facts)
        if status == RequestStatus.approved:
            _hold_grant(facts)
        return status
    except DBOSWorkflowCancelledError:
        raise
    except Exception as exc:
        log.exception("access request %s failed", facts["request_id"])
        record_failure(facts["request_id"], type(exc).__name__, str(exc))
        raise


def _wait_for_decision(facts: dict[str, Any]) -> str:
    request_id = facts["request_id"]
    if facts["auto_approve"]:
        return approve_automatically(request_id)
    _ask_approvers(facts)
    while True:
        remaining = max(0.0, facts["pending_until"] - time.time())
        message = DBOS.recv(DECISION_TOPIC, timeout_seconds=remaining)
        if message is None:
            status = expire_request(request_id)
            if status == RequestStatus.expired:
                _tell_requester(facts, "request.expired", f"Your request for {facts['resource']} expired",
                                "Nobody decided on your request in time. You can ask again.")
            return status
        result = apply_decision(request_id, message)
        DBOS.set_event(message_event(str(message.get("id"))), result)
        if result["applied"] and result["status"] != RequestStatus.requested:
            _announce(facts, result["status"], message)
            return result["status"]
        if result["status"] != RequestStatus.requested:  # ended elsewhere (e.g. the sweeper)
            return result["status"]


def _announce(facts: dict[str, Any], status: str, message: dict[str, Any]) -> None:
    comment = str(message.get("comment") or "").strip()
    if status == RequestStatus.rejected:
        _tell_requester(facts, "request.rejected", f"Your request for {facts['resource']} was rejected",
                        f"Your request for {facts['resource']} was rejected." + (f"\n\nReason: {comment}" if comment else ""))


def _hold_grant(facts: dict[str, Any]) -> None:
    grant = create_grant(facts["request_id"])
    if facts["auto_approve"]:
        DBOS.set_event(RECORDED_EVENT, facts)  # answered once granted: the page shows the access
    duration = facts["duration_seconds"]
    until = "permanently" if duration is None else f"for {describe(duration)}"
    _tell_requester(facts, "request.approved", f"Access to {facts['resource']} granted",
                    f"Your request for {facts['resource']} was approved: you have access {until}.")
    expires_at = grant["expires_at"]
    if expires_at is None:
        return
    reminder = facts["reminder"]
    if duration >= reminder["min_grant_seconds"]:
        reminder_at = expires_at - reminder["before_seconds"]
        if DBOS.recv(REVOKE_TOPIC, timeout_seconds=max(0.0, reminder_at - time.time())) is not None:
            return  # revoked early: revoke_grant_workflow did the revoking and the telling
        _tell_requester(facts, "grant.expiring", f"Your access to {facts['resource']} ends soon",
                        f"Your access to {facts['resource']} ends at "
                        f"{datetime.fromtimestamp(expires_at, UTC).strftime('%Y-%m-%d %H:%M')} UTC.")
    if DBOS.recv(REVOKE_TOPIC, timeout_seconds=max(0.0, expires_at - time.time())) is not None:
        return
    if end_grant(grant["grant_id"], "expired"):
        _tell_requester(facts, "grant.expired", f"Your access to {facts['resource']} has ended",
                        f"Your time-bound access to {facts['resource']} has ended. Request it again if you need it.")


@DBOS.workflow()
def revoke_grant_workflow(grant_id: int, actor_id: int, note: str, access_workflow_id: str | None,
                          facts: dict[str, Any]) -> bool:
    """An early revoke: end the grant, tell the holder, and wake the access workflow."""
    revoked = end_grant(grant_id, "revoked early", actor_id, note)
    if revoked:
        _tell_requester(facts, "grant.revoked", f"Your access to {facts['resource']} was revoked",
                        f"An administrator revoked your access to {facts['resource']}."
                        + (f"\n\nReason: {note}" if note else ""))
    if access_workflow_id:
        DBOS.send(access_workflow_id, {"grant_id": grant_id}, REVOKE_TOPIC)
    return revoked
