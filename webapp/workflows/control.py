"""Operator actions on DBOS workflows (cancel, resume, fork) and schedules (pause, resume,
trigger), the rules that guard them, and their audit rows.

DBOS itself accepts some actions that do nothing or harm: resuming a workflow that
succeeded is silently a no-op, and forking one that still runs leaves two copies waiting
for the same decision. Each action here first reads the workflow's status and refuses,
with a sentence an operator can act on, where DBOS would refuse or where the result
would surprise; then it acts and writes the audit row (who, why, what changed).

Forks get an id of their own shape, `<original>.fork-<8 hex>`: a fork is an operator
asking for the work again, so messages it sends are new deliveries (see `fork_label`),
while a crash recovery of the fork still sends each of its messages once.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from typing import Any

from dbos import DBOS, SetWorkflowID
from sqlalchemy.orm import Session

from webapp.core.errors import Refusal
from webapp.services.audit import Action, record_event
from webapp.services.identity import Principal
from webapp.workflows import inspect

RUNNING = frozenset({"PENDING", "ENQUEUED", "DELAYED"})
RESUMABLE = frozenset({"CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED", "ENQUEUED", "DELAYED"})
FINISHED = frozenset({"SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED"})
_FORK_SUFFIX = re.compile(r"\.(fork-[0-9a-f]{8})$")


class ActionRefused(Refusal):
    """The action cannot be taken; `status_code` is 404 (no such workflow, step or schedule) or 409."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message, status_code)


@dataclass(frozen=True)
class ActionResult:
    workflow_id: str
    action: str  # "cancel" | "resume" | "fork"
    status_before: str
    forked_to: str | None = None


def fork_workflow_id(original: str) -> str:
    return f"{original}.fork-{secrets.token_hex(4)}"


def fork_label(workflow_id: str | None) -> str:
    """"fork-<hex>" for a workflow forked from the console, "" for an original run."""
    found = _FORK_SUFFIX.search(workflow_id or "")
    return found.group(1) if found else ""


def refusal(action: str, status: str, *, step: int | None = None, last_step: int = 0) -> str | None:
    """Why `action` may not be taken on a workflow in `status`, or None when it may."""
    if action == "cancel" and status not in RUNNING:
        return f"This workflow already ended ({status}); there is nothing to cancel."
    if action == "resume":
        if status in ("SUCCESS", "ERROR"):
            return (f"This workflow ended in {status}; DBOS resumes only cancelled or stuck workflows. "
                    "Fork it from a step to run that part again.")
        if status not in RESUMABLE:
            return f"This workflow is running ({status}); there is nothing to resume."
    if action == "fork":
        if status not in FINISHED:
            return f"This workflow is still running ({status}); cancel it before forking, or two copies would run."
        if step is None or not 1 <= step <= last_step + 1:
            return f"Choose a step between 1 and {last_step + 1} to fork from."
    return None


async def act(action: str, workflow_id: str, *, step: int | None = None) -> ActionResult:
    """Check the rules against the workflow's current status, then take the action."""
    status = await inspect.workflow(workflow_id)
    if status is None:
        raise ActionRefused(404, f"No workflow with id {workflow_id}.")
    last_step = 0
    if action == "fork":
        steps = await DBOS.list_workflow_steps_async(workflow_id, load_output=False)
        last_step = max((s["function_id"] for s in steps), default=0)
    reason = refusal(action, status.status, step=step, last_step=last_step)
    if reason:
        raise ActionRefused(409, reason)
    if action == "cancel":
        await DBOS.cancel_workflow_async(workflow_id)
        return ActionResult(workflow_id, action, status.status)
    if action == "resume":
        await DBOS.resume_workflow_async(workflow_id)
        return ActionResult(workflow_id, action, status.status)
    assert step is not None
    with SetWorkflowID(fork_workflow_id(workflow_id)):
        handle = await DBOS.fork_workflow_async(workflow_id, step)
    return ActionResult(workflow_id, action, status.status, forked_to=handle.workflow_id)


AUDIT_ACTIONS = {"cancel": Action.WORKFLOW_CANCELLED, "resume": Action.WORKFLOW_RESUMED, "fork": Action.WORKFLOW_FORKED}


def audit(session: Session, result: ActionResult, principal: Principal, note: str,
          step: int | None = None) -> None:
    details: dict[str, Any] = {"reason": note, "status_before": result.status_before}
    if result.forked_to:
        details.update(forked_to=result.forked_to, from_step=step)
    record_event(session, actor=principal.email, actor_id=principal.id, action=AUDIT_ACTIONS[result.action],
                 subject=f"workflow:{result.workflow_id}", details=details)


# Schedules ---------------------------------------------------------------------------------

SCHEDULE_ACTIONS = {"pause": ("PAUSED", Action.SCHEDULE_PAUSED), "resume": ("ACTIVE", Action.SCHEDULE_RESUMED),
                    "trigger": (None, Action.SCHEDULE_TRIGGERED)}


def act_on_schedule(session: Session, name: str, verb: str, principal: Principal) -> str | None:
    """Pause, resume or trigger a schedule; returns the workflow a trigger started.

    Writes the audit row, then changes the schedule in DBOS, both before the caller's
    commit: if either fails nothing is recorded. (DBOS's tables may be in another database,
    so only a failed commit after the DBOS call could leave a change unaudited.) Blocking:
    call it in a worker thread."""
    found = DBOS.get_schedule(name)
    if found is None:
        raise ActionRefused(404, f"There is no schedule named “{name}”.")
    target, action = SCHEDULE_ACTIONS[verb]
    if target is not None and found["status"] == target:
        raise ActionRefused(409, f"The schedule “{name}” is already {target.lower()}.")
    event = record_event(session, actor=principal.email, actor_id=principal.id, action=action,
                         subject=f"schedule:{name}", details={"from": found["status"], "to": target} if target else {})
    if verb == "trigger":
        workflow_id = DBOS.trigger_schedule(name).workflow_id
        event.details = {"workflow_id": workflow_id}
        return workflow_id
    (DBOS.pause_schedule if verb == "pause" else DBOS.resume_schedule)(name)
    return None
