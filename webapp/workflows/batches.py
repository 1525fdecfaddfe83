"""Operator batches: many access requests started at once, paced by the rate-limited
`requests` queue (`/ops/submit` for a chosen set of people, `/ops/batch/{count}` for load).

    request_batch_workflow(batch_id, submissions)
      enqueue one start_request per submission on the `requests` queue, under
      "<batch_id>-<n>.start"
    start_request(workflow_id, submission)          on the queue
      start the request's own workflow ("<batch_id>-<n>") outside the queue, and end

A queue slot is held for as long as the workflow that took it runs. A request workflow
waits days for decisions and then for its grant to end, so the queue paces only the
start: the starter ends at once and frees its slot, and batches of any size finish (a
batch larger than the queue's concurrency used to stop there for good).

The batch is a workflow so that a crash half-way through enqueueing finishes the rest on
recovery, and the per-request ids make each start happen once. What becomes of each
request (recorded, refused as a duplicate, auto-approved) is the request workflow's own
business; `progress` reads it back from DBOS and the requests table.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from sqlalchemy.orm import Session

from webapp.core.db import Database
from webapp.core.models import AccessRequest
from webapp.services.access import Submission
from webapp.workflows.access import access_request_workflow
from webapp.workflows.control import FINISHED
from webapp.workflows.inspect import from_epoch_ms
from webapp.workflows.runtime import start_workflow

QUEUE = "requests"
PREFIX = "batch-"


def new_batch_id() -> str:
    return f"{PREFIX}{secrets.token_hex(6)}"


def member_id(batch_id: str, n: int) -> str:
    """The id of the batch's n-th request workflow (its starter's is this plus ".start")."""
    return f"{batch_id}-{n}"


@DBOS.workflow()
def request_batch_workflow(batch_id: str, submissions: list[Submission]) -> int:
    for n, submission in enumerate(submissions):
        request_id = member_id(batch_id, n)
        with SetWorkflowID(f"{request_id}.start"):
            DBOS.enqueue_workflow(QUEUE, start_request, request_id, submission)
    return len(submissions)


@DBOS.workflow()
def start_request(workflow_id: str, submission: Submission) -> str:
    """Start one request's workflow, outside the queue this starter was paced by."""
    with SetWorkflowID(workflow_id):
        DBOS.start_workflow(access_request_workflow, submission)
    return workflow_id


@dataclass(frozen=True)
class Progress:
    batch_id: str
    total: int
    queued: int  # not started yet (the queue's rate limit holds them)
    recorded: int  # became requests
    ended_unrecorded: int  # ended without a request: refused (duplicate, limit) or failed
    enqueuing: bool  # the batch workflow itself still runs

    @property
    def done(self) -> bool:
        return not self.enqueuing and self.recorded + self.ended_unrecorded >= self.total

    @property
    def percent(self) -> int:
        return 100 if not self.total else round(100 * (self.recorded + self.ended_unrecorded) / self.total)


async def progress(database: Database, batch_id: str) -> Progress | None:
    """Where the batch stands; None when there is no such batch."""
    found = await DBOS.list_workflows_async(workflow_ids=[batch_id], load_input=False, load_output=True)
    if not found or found[0].name != request_batch_workflow.__qualname__:
        return None
    batch = found[0]
    if isinstance(batch.output, int):  # done enqueueing: it returned the count
        total = batch.output
    else:  # still enqueueing (a moment): count its input, which holds every submission
        [batch] = await DBOS.list_workflows_async(workflow_ids=[batch_id], load_input=True, load_output=False)
        total = len(batch.input["args"][1]) if batch.input else 0
    members = await DBOS.list_workflows_async(workflow_id_prefix=f"{batch_id}-", load_input=False,
                                              load_output=False)
    starters = [w for w in members if w.name == start_request.__qualname__]
    requests = [w for w in members if w.name == access_request_workflow.__qualname__]
    recorded = set(await database.in_session(lambda s: _recorded_ids(s, batch_id)))
    return Progress(
        batch_id=batch_id, total=total,
        queued=sum(1 for w in starters if w.status == "ENQUEUED"),
        recorded=len(recorded),
        # Refused (a duplicate, over a limit) or failed; or never started (a cancelled starter).
        ended_unrecorded=sum(1 for w in requests if w.status in FINISHED and w.workflow_id not in recorded)
        + sum(1 for w in starters if w.status in FINISHED and w.status != "SUCCESS"),
        enqueuing=batch.status in ("PENDING", "ENQUEUED"),
    )


def _recorded_ids(session: Session, batch_id: str) -> list[str]:
    return list(session.scalars(sa.select(AccessRequest.workflow_id).where(
        AccessRequest.workflow_id.startswith(f"{batch_id}-"))))  # type: ignore[union-attr]


@dataclass(frozen=True)
class RecentBatch:
    batch_id: str
    status: str
    created: datetime | None
    count: int | None  # known once the batch has enqueued everything


async def recent(limit: int = 20) -> list[RecentBatch]:
    found = await DBOS.list_workflows_async(name=request_batch_workflow.__qualname__, sort_desc=True, limit=limit,
                                            load_input=False, load_output=True)
    return [RecentBatch(w.workflow_id, w.status, from_epoch_ms(w.created_at),
                        w.output if isinstance(w.output, int) else None) for w in found]


async def start(submissions: list[Submission]) -> str:
    """Start a batch of these submissions; returns its id (its progress is at `progress`)."""
    batch_id = new_batch_id()
    await start_workflow(batch_id, request_batch_workflow, batch_id, submissions)
    return batch_id
