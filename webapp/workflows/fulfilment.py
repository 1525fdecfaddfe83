"""Fulfilment: one durable workflow per task carries a grant (or its end) into the target system.

    task_workflow(workflow_id, parent)          "grant-<id>-add" / "grant-<id>-remove"
      1. start_task            transaction: running (or waiting, for a person); a removal
                               first cancels the grant's add if still open and waits for it
      2. automatic agents: each attempt is `attempt_workflow`, enqueued on the agent's own
         queue ("agent-<id>": its concurrency and rate limit; one attempt at a time per person
         and target, in the order they were enqueued), which reads the task and the
         agent's settings afresh (a removal another grant on the same target still needs is
         done without touching it), runs the operation as a step, records what happened
         (done; or the error, the agent unhealthy, an ErrorRecord) in a transaction, and sends
         the outcome back. Unreachable: pause with backoff (up to
         AGENT_RETRY_MAX_SECONDS) and try again, for as long as it takes. Refused: the task is
         failed and waits, open and loud, until a person retries or resolves it.
         manual agents: the task waits for a person (Done / Can't do), reminding the assignees
         every TASK_REMIND_SECONDS, and the admins too from the second reminder on.
      3. when it is done or cancelled, tell `parent` (the access workflow that waits for it).

The queue paces the operations only: the task workflow itself waits (for backoff, for people)
outside any queue, so a target that is down for a day holds no slot. People's messages
(retry, resolve, done, can't do) arrive on TASK_TOPIC and are answered on an event, as
decisions are (webapp/workflows/access.py).
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any, TypedDict

from dbos import DBOS, SetEnqueueOptions, SetWorkflowID

from webapp.agents import agent_for
from webapp.agents.base import AgentError, Change, Person
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.errors import NotAnsweredYet
from webapp.core.models import TaskStatus
from webapp.services import fulfilment as tasks
from webapp.services.agent_settings import queue_of
from webapp.services.fulfilment import MANUAL, Outcome, TaskFacts
from webapp.services.identity import Principal
from webapp.services.notifications import Message
from webapp.services.tasks import TaskError, TaskMessage, TaskReply, apply_message, check_message, reminder_for
from webapp.workflows.datasource import datasource
from webapp.workflows.notifications import OUTBOX, send_notifications

log = logging.getLogger(__name__)
TASK_TOPIC = "task"  # people's messages to a task
SETTLED_TOPIC = "task-settled"  # a task tells the workflow that waits for it
ANSWER_SECONDS = 10.0
WAIT_SLICE_SECONDS = 3600.0  # long waits are taken in slices (recv needs a timeout)
ATTEMPT_CHECK_SECONDS = 30.0  # how often a task waiting for its attempt looks whether it died


class Policy(TypedDict):
    first: float
    most: float
    rate: float
    remind: float
    polling: float


_policy = Policy(first=1.0, most=60.0, rate=2.0, remind=24 * 3600.0, polling=1.0)


def configure(settings: Settings) -> None:
    """Take the retry and reminder pauses from the settings (at each start, before launch)."""
    _policy.update(first=settings.agent_retry_first_seconds, most=settings.agent_retry_max_seconds,
                   rate=settings.agent_backoff_rate, remind=settings.task_remind_seconds,
                   polling=settings.agent_queue_polling_interval)
    _stored_queues.clear()  # a new launch may face another system database


def message_event(message_id: str) -> str:
    return f"message:{message_id}"


def partition_of(facts: TaskFacts) -> str:
    """The queue partition of a task's attempts: one membership (person and target). Attempts
    in one partition run one at a time, in order, so a removal for one grant and an add for
    another grant of the same person and target never cross in the target system: whichever
    runs second reads the grants afresh first (a removal another grant needs is skipped)."""
    return f"{facts['email'].lower()}\n{facts['target']}"


# The queue settings this process last stored, by agent id: a task whose agent's settings are
# unchanged skips the upsert (two queries on every task otherwise).
_stored_queues: dict[int, tuple[float, ...]] = {}


@DBOS.step()
def register_queue(agent_id: int, limits: dict[str, float]) -> None:
    """Store the agent's queue limits as the task starts, so an agent's queue exists and follows
    its settings (the queue runners pick a new queue up within a second). Still a step when
    there is nothing to store, so the workflow's steps stay the same for recovery."""
    wanted = (limits["concurrency"], limits["rate_limit"], limits["rate_period"], _policy["polling"])
    if _stored_queues.get(agent_id) == wanted:
        return
    DBOS.register_queue(queue_of(agent_id), worker_concurrency=int(limits["concurrency"]),
                        limiter={"limit": int(limits["rate_limit"]), "period": float(limits["rate_period"])},
                        partition_concurrency=1, polling_interval_sec=_policy["polling"],
                        on_conflict="always_update")
    _stored_queues[agent_id] = wanted


# Transactions --------------------------------------------------------------------------------

@datasource.transaction()
def start_task(workflow_id: str) -> TaskFacts:
    return tasks.start_task(datasource.session(), workflow_id)


@datasource.transaction()
def record_outcome(task_id: int, outcome: Outcome) -> None:
    if outcome["error"] is None:
        tasks.finish_task(datasource.session(), task_id)
    else:
        tasks.note_failure(datasource.session(), task_id, outcome["error"], transient=outcome["transient"],
                           workflow_id=DBOS.workflow_id)


@datasource.transaction()
def skip_if_still_held(task_id: int) -> bool:
    return tasks.skip_if_still_held(datasource.session(), task_id)


@datasource.transaction()
def task_status(task_id: int) -> str:
    return tasks.status_of(datasource.session(), task_id)


@datasource.transaction()
def attempt_facts(task_id: int) -> TaskFacts | None:
    return tasks.attempt_facts(datasource.session(), task_id)


@datasource.transaction()
def apply_task_message(task_id: int, message: TaskMessage) -> TaskReply:
    return apply_message(datasource.session(), task_id, message)


@datasource.transaction()
def plan_reminder(task_id: int, round_: int) -> list[dict[str, Any]]:
    """The assignees' messages for this round; each reminder counts as an attempt."""
    if round_:
        tasks.count_attempt(datasource.session(), task_id)
    return reminder_for(datasource.session(), task_id, round_)


# The operation, on the agent's queue ---------------------------------------------------------

@DBOS.step()
def operate(facts: TaskFacts) -> Outcome:
    """One try at the change in the target. Every failure is an outcome, never an exception:
    the task decides what comes next."""
    person = Person(facts["email"], facts["name"])
    ends_at = None if facts["ends_at"] is None else datetime.fromtimestamp(facts["ends_at"], UTC)
    change = Change(grant_id=facts["grant_id"], resource=facts["resource"], ends_at=ends_at, key=facts["key"])
    try:
        agent = agent_for(facts["agent_kind"], facts["settings"])
        if facts["action"] == "add":
            agent.add(person, facts["target"], change)
        else:
            agent.remove(person, facts["target"], change)
    except AgentError as exc:
        return Outcome(error=str(exc), transient=exc.transient)
    except ValueError as exc:  # settings the agent cannot use: a person must fix them
        return Outcome(error=str(exc), transient=False)
    except Exception as exc:  # a bug or an unforeseen failure: say so, and keep trying
        log.exception("agent %s failed on task %s", facts["agent_kind"], facts["task_id"])
        return Outcome(error=f"{type(exc).__name__}: {exc}", transient=True)
    return Outcome(error=None, transient=False)


@DBOS.workflow()
def attempt_workflow(task_id: int, reply_to: str, topic: str) -> Outcome:
    """One try, on the agent's queue: read the task afresh, make the change, record what
    happened, and tell the task (a message wakes it at once; polling for a result would not)."""
    facts = attempt_facts(task_id)
    if facts is None:  # closed meanwhile, or a removal another grant still needs
        outcome = Outcome(error=None, transient=False)
    else:
        outcome = operate(facts)
        record_outcome(task_id, outcome)
    DBOS.send(reply_to, outcome, topic)
    return outcome


ENDED_BADLY = ("ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


def _attempt(facts: TaskFacts, number: int) -> Outcome:
    """Enqueue one try on the agent's queue and wait for what it found (it may wait in the
    queue). A try that ended without answering (errored, cancelled from the ops console)
    counts as a transient failure, so the task never waits for an answer that cannot come."""
    attempt_id, topic = f"{facts['key']}-try-{number}", f"attempt-{number}"
    with SetWorkflowID(attempt_id), SetEnqueueOptions(queue_partition_key=partition_of(facts)):
        DBOS.enqueue_workflow(queue_of(facts["agent_id"]), attempt_workflow, facts["task_id"], DBOS.workflow_id,
                              topic)
    while True:
        outcome = DBOS.recv(topic, timeout_seconds=ATTEMPT_CHECK_SECONDS)
        if outcome is not None:
            return outcome  # type: ignore[no-any-return]
        status = DBOS.get_workflow_status(attempt_id)
        if status is not None and status.status in ENDED_BADLY:
            return Outcome(error=f"The attempt ended without an answer ({status.status}).", transient=True)


# The task ------------------------------------------------------------------------------------

@DBOS.workflow(max_recovery_attempts=None)
def task_workflow(workflow_id: str, parent: str | None = None) -> str:
    """Carry out one task; its final status (done or cancelled)."""
    facts = start_task(workflow_id)
    if facts.get("wait_for"):
        _settle_add_first(facts["wait_for"])  # type: ignore[arg-type]
    if facts["status"] in (TaskStatus.done, TaskStatus.cancelled):
        status = facts["status"]  # closed before it started (an add its grant's end cancelled)
    elif facts["action"] == "remove" and skip_if_still_held(facts["task_id"]):
        status = str(TaskStatus.done)
    else:
        _carry_out(facts)
        status = task_status(facts["task_id"])  # cancelled meanwhile, even if an attempt then succeeded
    if parent:
        DBOS.send(parent, {"task": workflow_id, "status": status}, SETTLED_TOPIC)
    return status


def _settle_add_first(add_workflow: str) -> str | None:
    """A removal waits for its grant's add (cancelled in start_task) to stop: wake it if it
    waits, and wait for its result. An add whose workflow never started has nothing to wait for."""
    if DBOS.get_workflow_status(add_workflow) is None:
        return None
    DBOS.send(add_workflow, TaskMessage(id=uuid.uuid4().hex, kind="cancel", actor_id=None, note=""), TASK_TOPIC)
    try:
        return str(DBOS.get_result(add_workflow))
    except Exception as exc:  # an add that errored or was cancelled from the ops console
        return f"{type(exc).__name__}"


def _carry_out(facts: TaskFacts) -> str:
    manual = facts["agent_kind"] == MANUAL
    state = TaskStatus.waiting if manual else TaskStatus.running
    if manual:
        _remind(facts, 0)
    else:
        register_queue(facts["agent_id"], facts["limits"])
    attempts, pause, reminders = 0, _policy["first"], 0
    while True:
        if state == TaskStatus.running:
            attempts += 1
            outcome = _attempt(facts, attempts)
            if outcome["error"] is None:
                return str(TaskStatus.done)
            state = TaskStatus.queued if outcome["transient"] else TaskStatus.failed
        if state == TaskStatus.queued:
            wait, pause = pause, min(pause * _policy["rate"], _policy["most"])
        else:
            wait = _policy["remind"] if state == TaskStatus.waiting else WAIT_SLICE_SECONDS
        message = DBOS.recv(TASK_TOPIC, timeout_seconds=wait)
        if message is None:
            if state == TaskStatus.queued:
                state = TaskStatus.running  # the pause is over: try again
            elif state == TaskStatus.waiting:
                reminders += 1
                _remind(facts, reminders)
            continue
        reply = apply_task_message(facts["task_id"], message)
        if message.get("id"):
            DBOS.set_event(message_event(str(message["id"])), reply)
        if reply["status"] in (TaskStatus.done, TaskStatus.cancelled):
            return reply["status"]
        if reply["applied"]:
            state = TaskStatus(reply["status"])
            pause = _policy["first"]


def _remind(facts: TaskFacts, round_: int) -> None:
    """Tell a manual task's assignees what to do (round 0), then remind them; from the second
    reminder on, the admins hear of it too."""
    base = OUTBOX.settings.base_url.rstrip("/")
    send_notifications([Message(**{**spec, "link": base + spec["link"]})
                        for spec in plan_reminder(facts["task_id"], round_)])


# What the pages call -------------------------------------------------------------------------

async def send_message(database: Database, principal: Principal, task_id: int, kind: str, note: str = "") -> TaskReply:
    """Send a person's message (done, cant, retry, resolve) to the task and return what it did.
    TaskError: 404, 403, 409; NotAnsweredYet when the workflow did not answer in time."""
    workflow_id = await database.in_session(lambda s: check_message(s, principal, task_id, kind))
    message = TaskMessage(id=uuid.uuid4().hex, kind=kind, actor_id=principal.id, note=note)
    await DBOS.send_async(workflow_id, message, TASK_TOPIC, idempotency_key=message["id"])
    reply: TaskReply | None = await DBOS.get_event_async(workflow_id, message_event(message["id"]),
                                                         timeout_seconds=ANSWER_SECONDS)
    if reply is None:
        raise NotAnsweredYet("Your message was sent but the task has not answered yet; reload shortly.")
    if not reply["applied"]:
        raise TaskError(409, f"Nothing changed: {reply['note']}.")
    return reply
