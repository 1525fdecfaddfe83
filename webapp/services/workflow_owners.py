"""What each DBOS workflow works for: an access request (its own, or its original's for a
fork) or an import job, read from the app's tables by workflow id."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import AccessRequest, ImportJob
from webapp.services.request_table import request_url

IMPORT_PREFIX = "import-"


class HasIds(Protocol):
    id: str
    forked_from: str | None


@dataclass(frozen=True)
class Owner:
    href: str
    text: str
    progress: str | None  # the request's status, or the import's chunks done of total


def import_job_of(workflow_id: str) -> int | None:
    """`import-<job>-...` (runs and chunks); `import-start-<key>` names no job yet."""
    head = workflow_id[len(IMPORT_PREFIX):].split("-", 1)[0]
    return int(head) if workflow_id.startswith(IMPORT_PREFIX) and head.isdigit() else None


def import_job_prefix(job_id: int) -> str:
    """The id prefix of every workflow of one import job."""
    return f"{IMPORT_PREFIX}{job_id}-"


def request_workflow(session: Session, request_id: int) -> str | None:
    return session.scalar(sa.select(AccessRequest.workflow_id).where(AccessRequest.id == request_id))


def owners(session: Session, workflows: list[HasIds]) -> dict[str, Owner]:
    """The owner of each of these workflows that has one, by workflow id."""
    ids = [i for w in workflows for i in (w.id, w.forked_from) if i]
    requests = {wid: (rid, status) for wid, rid, status in session.execute(
        sa.select(AccessRequest.workflow_id, AccessRequest.id, AccessRequest.status)
        .where(AccessRequest.workflow_id.in_(ids)))}  # type: ignore[attr-defined]
    jobs = {j for j in (import_job_of(w.id) for w in workflows) if j}
    chunks = {job_id: f"chunks {done:,}/{total:,}" for job_id, done, total in session.execute(
        sa.select(ImportJob.id, ImportJob.chunks_done, ImportJob.chunks_total).where(ImportJob.id.in_(jobs)))}  # type: ignore[union-attr]
    found = {}
    for w in workflows:
        owner = next((i for i in (w.id, w.forked_from) if i in requests), None)
        job = import_job_of(w.id)
        if owner:
            request_id, status = requests[owner]
            found[w.id] = Owner(request_url(request_id), f"Request #{request_id}", status)
        elif job:
            found[w.id] = Owner(f"/admin/import/{job}", f"Import {job}", chunks.get(job))
    return found
