"""The access-request workflow: one durable workflow per request, and the operations the
pages use to start it, send it decisions and revoke a grant.

    access_request_workflow(submission)
      1. record_request        transaction: the request and its audit event, or "refused"
      2. auto-approve, or notify the approvers and wait: DBOS.recv("decision") until the
         pending TTL; each message goes through apply_decision (a transaction), which
         counts distinct approvals, lets one rejection end it, lets the requester cancel,
         and records late or repeated messages without acting on them
      3. approved: create_grant; when the resource has an agent, its add task
         (webapp/workflows/fulfilment.py) must settle before the grant is active; tell the
         requester; a time-bound grant gets a reminder (1 h before the end for grants of
         8 h or more), a durable wait until the end, then end_grant, its remove task, and a
         last message once the access is really gone
    revoke_grant_workflow(grant_id, ...)
      an early revoke: end_grant, start its remove task, tell the holder, wake the access
      workflow if it waits

Every state change (webapp.services.access_changes) and its audit event commit in one
datasource transaction, whose result DBOS records in that same transaction: a replay
after a crash reads the result instead of writing again. Inputs and step results are
typed dicts (webapp.services.access), which DBOS records as they are.

The pages call `submit`, `decide` and `revoke`: the topics, events and workflow ids are
this module's business alone.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from dbos import DBOS, SetWorkflowID

from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.durations import describe
from webapp.core.errors import NotAnsweredYet
from webapp.core.models import RequestStatus
from webapp.services import access_changes as changes
from webapp.services import extensions
from webapp.services.access import (
    AccessError,
    DecisionKind,
    DecisionMessage,
    DecisionOutcome,
    EndedGrant,
    GrantFacts,
    MessageFacts,
    Refused,
    RequestFacts,
    Submission,
    check_decision,
    check_revoke,
    prepare_submission,
    request_id_for_workflow,
)
from webapp.services.audit import Via, acting_person, acting_through
from webapp.services.extensions import Extended
from webapp.services.identity import Principal
from webapp.services.notifications import Message
from webapp.workflows.control import fork_label
from webapp.workflows.datasource import datasource
from webapp.workflows.fulfilment import SETTLED_TOPIC, WAIT_SLICE_SECONDS, task_workflow
from webapp.workflows.notifications import decision_links, request_link, send_notifications
from webapp.workflows.runtime import WorkflowCancelled, is_known, start_workflow

log = logging.getLogger(__name__)
DECISION_TOPIC = "decision"
REVOKE_TOPIC = "revoke"
RECORDED_EVENT = "recorded"
REVOKED_EVENT = "revoked"  # a revoke workflow ended the grant (or found it ended)
ANSWER_SECONDS = 10.0  # how long a page waits for the workflow to say what it did


def message_event(message_id: str) -> str:
    """The event key under which the workflow publishes what a message did."""
    return f"message:{message_id}"


def request_workflow_id(requester_id: int, form_key: str) -> str:
    """Derived from the key the form carries, so a double-clicked submit starts one workflow."""
    return f"request-{requester_id}-{form_key}"


# Transactions: each state change with DBOS's record of it ---------------------------------

@datasource.transaction()
def record_request(submission: Submission) -> RequestFacts | Refused:
    with acting_through(submission.get("token_id"), submission.get("channel")):
        return changes.record_request(datasource.session(), submission, workflow_id=DBOS.workflow_id or "")


@datasource.transaction()
def apply_decision(request_id: int, message: DecisionMessage) -> DecisionOutcome:
    with acting_through(message.get("token_id"), message.get("channel")):
        return changes.apply_decision(datasource.session(), request_id, message)


@datasource.transaction()
def approve_automatically(request_id: int) -> str:
    return changes.approve_automatically(datasource.session(), request_id)


@datasource.transaction()
def expire_request(request_id: int) -> str:
    return changes.expire_request(datasource.session(), request_id)


@datasource.transaction()
def create_grant(request_id: int) -> GrantFacts:
    return changes.create_grant(datasource.session(), request_id, workflow_id=DBOS.workflow_id)


@datasource.transaction()
def end_grant(grant_id: int, reason: str, actor_id: int | None = None, note: str = "",
              token_id: int | None = None) -> EndedGrant:
    with acting_person(token_id, actor_id):
        return changes.end_grant(datasource.session(), grant_id, reason, workflow_id=DBOS.workflow_id,
                                 actor_id=actor_id, note=note)


@datasource.transaction()
def extend_grant(request_id: int, grant_id: int) -> Extended:
    return extensions.extend_grant(datasource.session(), request_id, grant_id)


@datasource.transaction()
def record_failure(request_id: int, error_type: str, error_message: str) -> None:
    changes.record_failure(datasource.session(), request_id, error_type, error_message,
                           workflow_id=DBOS.workflow_id)


# Messages ----------------------------------------------------------------------------------

def _message(facts: MessageFacts, event: str, recipient: str, subject: str, body: str) -> Message:
    request_id = facts["request_id"]
    return Message(request_id=request_id, event=event, recipient=recipient, subject=subject, body=body,
                   link=request_link(request_id), run=fork_label(DBOS.workflow_id))


def _ask_approvers(facts: RequestFacts) -> None:
    """Each approver's message offers their own approve and reject links (and Slack buttons)."""
    subject = f"{facts['requester_name']} requests {facts['resource']}"
    body = (f"{facts['requester_name']} ({facts['requester']}) asks for {facts['resource']} "
            f"for {describe(facts['duration_seconds'])}.\n\nReason: {facts['reason']}")
    send_notifications([replace(_message(facts, "request.submitted", approver, subject, body),
                                actions=decision_links(facts["request_id"], approver, facts["pending_until"]))
                        for approver in facts["approvers"]])


def _tell_requester(facts: MessageFacts, event: str, subject: str, body: str) -> None:
    send_notifications([_message(facts, event, facts["requester"], subject, body)])


# Workflows ---------------------------------------------------------------------------------

# Waits for days across deploys and restarts, and each restart counts as a recovery
# attempt: DBOS's default limit (100) would one day dead-letter a sleeping grant, which
# would then never be revoked. Its steps are small transactions, not a crash risk.
@DBOS.workflow(max_recovery_attempts=None)
def access_request_workflow(submission: Submission) -> str:
    facts = record_request(submission)
    if "refused" in facts or not facts["auto_approve"]:
        DBOS.set_event(RECORDED_EVENT, facts)  # the submitting page can show the request now
    if "refused" in facts:
        return "refused"
    try:
        status = _wait_for_decision(facts)
        if status == RequestStatus.approved:
            extends = facts.get("extends_grant_id")
            if not (extends and _extend(facts, extends)):
                _hold_grant(facts)
        return status
    except WorkflowCancelled:
        raise
    except Exception as exc:
        log.exception("access request %s failed", facts["request_id"])
        record_failure(facts["request_id"], type(exc).__name__, str(exc))
        raise


def _wait_for_decision(facts: RequestFacts) -> str:
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


def _announce(facts: RequestFacts, status: str, message: DecisionMessage) -> None:
    comment = str(message.get("comment") or "").strip()
    if status == RequestStatus.rejected:
        _tell_requester(facts, "request.rejected", f"Your request for {facts['resource']} was rejected",
                        f"Your request for {facts['resource']} was rejected." + (f"\n\nReason: {comment}" if comment else ""))


def _start_task(task: str, parent: str | None) -> None:
    with SetWorkflowID(task):
        DBOS.start_workflow(task_workflow, task, parent)


def _settle(task: str | None, until: float | None = None) -> str | None:
    """Start a fulfilment task and wait until it settles (or until `until`, epoch seconds):
    its status, "done" when there is no task, None when the time came first."""
    if task is None:
        return "done"
    _start_task(task, DBOS.workflow_id)
    # Every turn calls recv, and only recv's recorded answers decide what comes next: a replay
    # long after `until` must take the same path as the first run did.
    while True:
        timeout = WAIT_SLICE_SECONDS if until is None else max(0.0, until - time.time())
        settled = DBOS.recv(SETTLED_TOPIC, timeout_seconds=timeout)
        if settled is None:
            if until is None:
                continue
            return None
        if settled.get("task") == task:
            return str(settled["status"])


def _hold_grant(facts: RequestFacts) -> None:
    grant = create_grant(facts["request_id"])
    if facts["auto_approve"]:
        DBOS.set_event(RECORDED_EVENT, facts)  # answered once granted: the page shows the access
    provisioned = _settle(grant.get("task"), grant["expires_at"])
    if provisioned is None:  # still not in place when it was due to end: end it
        _expire(facts, grant)
        return
    if provisioned != "done":
        return  # revoked before it took effect: revoke_grant_workflow did the telling
    duration = facts["duration_seconds"]
    until = "permanently" if duration is None else f"for {describe(duration)}"
    _tell_requester(facts, "request.approved", f"Access to {facts['resource']} granted",
                    f"Your request for {facts['resource']} was approved: you have access {until}.")
    if grant["expires_at"] is not None:
        _hold_until_the_end(facts, grant)


def _hold_until_the_end(facts: RequestFacts, grant: GrantFacts) -> None:
    """Sleep until the grant ends (reminding the holder before), and end it. An approved
    extension moves the end (a message, or found at the expiry itself); a revoke ends the wait."""
    expires_at = grant["expires_at"]
    assert expires_at is not None and facts["duration_seconds"] is not None
    reminder = facts["reminder"]
    remind = facts["duration_seconds"] >= reminder["min_grant_seconds"]
    while True:
        if remind:
            message = DBOS.recv(REVOKE_TOPIC, timeout_seconds=max(0.0, expires_at - reminder["before_seconds"]
                                                                  - time.time()))
            if message is not None:
                if "extended_to" not in message:
                    return  # revoked early: revoke_grant_workflow did the revoking and the telling
                expires_at = max(expires_at, float(message["extended_to"]))
                continue
            _tell_requester(facts, "grant.expiring", f"Your access to {facts['resource']} ends soon",
                            f"Your access to {facts['resource']} ends at "
                            f"{datetime.fromtimestamp(expires_at, UTC).strftime('%Y-%m-%d %H:%M')} UTC.")
            remind = False
        message = DBOS.recv(REVOKE_TOPIC, timeout_seconds=max(0.0, expires_at - time.time()))
        if message is None:
            later = _expire(facts, grant)
        elif "extended_to" in message:
            later = float(message["extended_to"])
        else:
            return
        if later is None:
            return
        if later > expires_at:  # extended: a reminder again before the new end
            expires_at, remind = later, facts["duration_seconds"] >= reminder["min_grant_seconds"]


def _expire(facts: RequestFacts, grant: GrantFacts) -> float | None:
    """End the grant at its time and, once its agent removed the access, say so. If an
    extension moved its end meanwhile, nothing ends: the new end (epoch seconds)."""
    ended = end_grant(grant["grant_id"], "expired")
    if "extended_to" in ended:
        return ended["extended_to"]
    if ended["ended"]:
        _settle(ended["task"])
        _tell_requester(facts, "grant.expired", f"Your access to {facts['resource']} has ended",
                        f"Your time-bound access to {facts['resource']} has ended. Request it again if you need it.")
    return None


def _extend(facts: RequestFacts, grant_id: int) -> bool:
    """An approved extension: move the grant's end and tell its workflow. False when the grant
    ended before (or is permanent): the request then grants anew."""
    extended = extend_grant(facts["request_id"], grant_id)
    if not extended["extended"]:
        return False
    if extended["holder"] and DBOS.get_workflow_status(extended["holder"]) is not None:
        DBOS.send(extended["holder"], {"grant_id": grant_id, "extended_to": extended["expires_at"]}, REVOKE_TOPIC)
    if facts["auto_approve"]:
        DBOS.set_event(RECORDED_EVENT, facts)
    ends = datetime.fromtimestamp(extended["expires_at"] or 0, UTC).strftime("%Y-%m-%d %H:%M")
    _tell_requester(facts, "request.approved", f"Access to {facts['resource']} extended",
                    f"Your request to extend your access to {facts['resource']} was approved: it now ends at "
                    f"{ends} UTC.")
    return True


def revoke_workflow_id(grant_id: int) -> str:
    return f"revoke-grant-{grant_id}"


@DBOS.workflow()
def revoke_grant_workflow(grant_id: int, actor_id: int | None, note: str, access_workflow_id: str | None,
                          facts: MessageFacts, token_id: int | None = None, reason: str = "revoked early") -> bool:
    """An early revoke (by an admin, or by the sweep for a deactivated person): end the grant,
    start its removal, tell the holder, and wake the access workflow. The removal goes on by
    itself (it may wait for a target that is down, or for a person): nobody waits for it here."""
    ended = end_grant(grant_id, reason, actor_id, note, token_id)
    revoked = ended["ended"]
    if ended["task"]:
        _start_task(ended["task"], None)
    if revoked and actor_id is not None:  # a deactivated person is not told
        _tell_requester(facts, "grant.revoked", f"Your access to {facts['resource']} was revoked",
                        f"An administrator revoked your access to {facts['resource']}."
                        + (f"\n\nReason: {note}" if note else ""))
    DBOS.set_event(REVOKED_EVENT, revoked)  # the operator's page answers now (LISTEN/NOTIFY, no polling)
    if access_workflow_id and DBOS.get_workflow_status(access_workflow_id) is not None:
        DBOS.send(access_workflow_id, {"grant_id": grant_id}, REVOKE_TOPIC)  # imported grants have none
    return revoked


# What the pages call -------------------------------------------------------------------------

@dataclass(frozen=True)
class Submitted:
    request_id: int
    workflow_id: str


async def find_submission(database: Database, requester_id: int, form_key: str) -> Submitted | None:
    """The request this form (by its key) already made, if any: a form sent twice shows it."""
    workflow_id = request_workflow_id(requester_id, form_key)
    found = await database.in_session(lambda s: request_id_for_workflow(s, workflow_id))
    return None if found is None else Submitted(found, workflow_id)


async def submit(database: Database, settings: Settings, requester: Principal, *, resource_id: int, duration: str,
                 reason: str, form_key: str, extends_grant_id: int | None = None) -> Submitted:
    """Start the request's workflow (once per form key) and wait until it recorded the request.

    AccessError (422, naming the field) when the submission is refused; NotAnsweredYet when
    the workflow did not record it within ANSWER_SECONDS."""
    workflow_id = request_workflow_id(requester.id, form_key)
    try:
        submission = await database.in_session(lambda s: prepare_submission(
            s, settings, requester, resource_id=resource_id, duration=duration, reason=reason,
            extends_grant_id=extends_grant_id))
    except AccessError:
        # A resent form whose workflow recorded the request in the meantime is not a duplicate.
        resent = await find_submission(database, requester.id, form_key)
        if resent is not None:
            return resent
        raise
    await start_workflow(workflow_id, access_request_workflow, submission)
    recorded = await DBOS.get_event_async(workflow_id, RECORDED_EVENT, timeout_seconds=ANSWER_SECONDS)
    if recorded is None:
        raise NotAnsweredYet("The request was accepted but is not recorded yet; see My requests shortly.")
    if "refused" in recorded:
        raise AccessError(422, recorded["refused"], "resource_id")
    return Submitted(recorded["request_id"], workflow_id)


async def decide(database: Database, principal: Principal, request_id: int, kind: DecisionKind,
                 comment: str = "", *, via: Via | None = None, link_id: str | None = None) -> DecisionOutcome:
    """Send a decision (approve, reject, cancel) to the request's workflow and return what it did.
    `via`: where it was made (by default the API with a token, else the web); `link_id`: the
    emailed link it was made with, which the decision spends.

    AccessError: 404 (not visible), 403 (not theirs to decide or cancel), 409 (no longer
    pending, or the workflow ignored it, saying why); NotAnsweredYet past ANSWER_SECONDS."""
    sent = await send_decision(database, principal, request_id, kind, comment, via=via, link_id=link_id)
    return await decision_outcome(sent)


@dataclass(frozen=True)
class SentDecision:
    """A decision the request's workflow has durably received, and where its answer appears."""

    workflow_id: str
    message_id: str


async def send_decision(database: Database, principal: Principal, request_id: int, kind: DecisionKind,
                        comment: str = "", *, via: Via | None = None, link_id: str | None = None) -> SentDecision:
    """The first half of `decide`: check it, and hand it to the workflow (durably: once this
    returns, the decision is not lost). Slack's buttons acknowledge here and learn the
    outcome later."""
    workflow_id = await database.in_session(lambda s: check_decision(s, principal, request_id, kind))
    message = DecisionMessage(id=uuid.uuid4().hex, kind=kind, actor_id=principal.id, comment=comment,
                              token_id=principal.token_id, channel=via or ("api" if principal.via_token else "web"),
                              link_id=link_id)
    await DBOS.send_async(workflow_id, message, DECISION_TOPIC, idempotency_key=message["id"])
    return SentDecision(workflow_id, message["id"])


async def decision_outcome(sent: SentDecision) -> DecisionOutcome:
    """The second half of `decide`: what the workflow did with the decision."""
    result: DecisionOutcome | None = await DBOS.get_event_async(
        sent.workflow_id, message_event(sent.message_id), timeout_seconds=ANSWER_SECONDS)
    if result is None:
        raise NotAnsweredYet("Your decision was sent but not applied yet; reload the page shortly.")
    if not result["applied"]:
        raise AccessError(409, f"Nothing changed: {result['note']}.")
    return result


async def revoke(database: Database, principal: Principal, grant_id: int, note: str) -> int | None:
    """End an active grant now: the holder is told and the request's workflow wakes up.
    Returns the grant's request id (None for a grant without one). AccessError: 404, 409."""
    target = await database.in_session(lambda s: check_revoke(s, grant_id))
    sleeper = target["access_workflow_id"]
    if sleeper and not await is_known(sleeper):
        sleeper = None  # imported history (the demo seed) has no workflow to wake
    workflow_id = revoke_workflow_id(grant_id)
    await start_workflow(workflow_id, revoke_grant_workflow, grant_id, principal.id, note, sleeper, target["facts"],
                         principal.token_id)
    if await DBOS.get_event_async(workflow_id, REVOKED_EVENT, timeout_seconds=ANSWER_SECONDS) is None:
        raise NotAnsweredYet("The revoke was accepted but has not taken effect yet; reload the page shortly.")
    return target["facts"]["request_id"]
