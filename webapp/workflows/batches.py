"""Operator batches: many access requests started at once through the rate-limited
`requests` queue (`/ops/submit` for a chosen set of people, `/ops/batch/{count}` for load).

    request_batch_workflow(batch_id, submissions)
      enqueue one access_request_workflow per submission, under "<batch_id>-<n>"

The batch is a workflow so that a crash half-way through enqueueing finishes the rest on
recovery, and the per-request ids make each enqueue happen once. What becomes of each
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
    return f"{batch_id}-{n}"


@DBOS.workflow()
def request_batch_workflow(batch_id: str, submissions: list[Submission]) -> int:
    for n, submission in enumerate(submissions):
        with SetWorkflowID(member_id(batch_id, n)):
            DBOS.enqueue_workflow(QUEUE, access_request_workflow, submission)
    return len(submissions)


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
    recorded = set(await database.in_session(lambda s: _recorded_ids(s, batch_id)))
    return Progress(
        batch_id=batch_id, total=total,
        queued=sum(1 for w in members if w.status == "ENQUEUED"),
        recorded=len(recorded),
        ended_unrecorded=sum(1 for w in members if w.status in FINISHED and w.workflow_id not in recorded),
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
