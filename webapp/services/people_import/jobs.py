"""Import jobs as the pages and the CLI see them: the order that starts one, its progress,
and the early checks for cancel, resume and retry (the workflow stays the authority)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.errors import Refusal
from webapp.core.models import ChunkStatus, ErrorRecord, ImportChunk, ImportJob, ImportStatus
from webapp.services.audit import Action, record_event
from webapp.services.people_import.orders import JobSpec
from webapp.services.people_import.plan import MAX_CHUNKS, chunk_count, page_size_for
from webapp.services.people_import.reach import FetchPolicy
from webapp.services.people_import.source import Source, SourceRefused, count_in_file, parse_source

ACTIVE = (ImportStatus.running, ImportStatus.cancelling)
OPEN_CHUNKS = (ChunkStatus.pending, ChunkStatus.queued, ChunkStatus.running)


class ImportRefused(Refusal):
    """The job cannot do this now (or cannot be made as asked)."""


def job_spec(*, source_text: str, count: int, seed: str, chunk_size: int, nat: str, create_users: bool,
             files_dir: Path | None, preferred_page_size: int, policy: FetchPolicy) -> JobSpec:
    """The `spec` of a new job's order, or ImportRefused naming the field."""
    try:
        source = parse_source(source_text, files_dir=files_dir, policy=policy)
    except SourceRefused as refused:
        raise ImportRefused(str(refused), 422, "source") from None
    if source.kind == "file":
        try:
            available = count_in_file(source)
        except Exception as exc:  # unreadable or malformed: say so on the form
            raise ImportRefused(f"The file cannot be read: {exc}", 422, "source") from None
        if available == 0:
            raise ImportRefused("The file holds no people.", 422, "source")
        count = min(count, available)
    page_size = page_size_for(count, chunk_size, preferred_page_size)
    if chunk_count(count, chunk_size, page_size) > MAX_CHUNKS:
        raise ImportRefused(f"That makes more than {MAX_CHUNKS:,} batches; choose a bigger batch size.", 422, "chunk_size")
    return JobSpec(source=source.location, source_kind=source.kind, count=count, seed=seed, nat=nat,
                   chunk_size=chunk_size, page_size=page_size, create_users=create_users)


def describe_source(job: ImportJob) -> str:
    return Source(job.source_kind, job.source).describe()  # type: ignore[arg-type]


@dataclass
class Progress:
    job: ImportJob
    chunks: list[ImportChunk]
    imported: int
    invalid: int
    counts: Counter[str]
    rate: float | None  # people per second in the current run
    eta_seconds: float | None
    errors: list[ErrorRecord] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.job.status in ACTIVE

    @property
    def source(self) -> str:
        return describe_source(self.job)

    @property
    def done_fraction(self) -> float:
        total = self.job.count or 1
        return min(1.0, (self.imported + self.invalid) / total)

    def as_json(self) -> dict[str, Any]:
        job = self.job
        return {
            "id": job.id, "status": job.status, "source": job.source, "count": job.count, "seed": job.seed,
            "nat": job.nat, "chunk_size": job.chunk_size, "page_size": job.page_size,
            "create_users": job.create_users, "run": job.run, "workflow_id": job.workflow_id,
            "imported": self.imported, "invalid": self.invalid,
            "chunks": {"total": len(self.chunks), **{status.value: self.counts.get(status, 0) for status in ChunkStatus}},
            "rate": self.rate, "eta_seconds": self.eta_seconds,
            "created_at": job.created_at.isoformat(), "started_at": job.started_at.isoformat(),
            "finished_at": job.finished_at.isoformat() if job.finished_at else None,
            "failed_chunks": [{"number": c.number, "error": c.error} for c in self.chunks
                              if c.status == ChunkStatus.failed],
        }


def progress(session: Session, job_id: int, *, now: datetime, errors: int = 0) -> Progress | None:
    """A job and its chunks; live counts come from the chunk rows, which the chunk
    transactions write, so they are right while the job runs and after a crash."""
    job = session.get(ImportJob, job_id)
    if job is None:
        return None
    chunks = list(session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id)
                                  .order_by(ImportChunk.number)))
    counts: Counter[str] = Counter(str(c.status) for c in chunks)
    imported = sum(c.imported for c in chunks)
    invalid = sum(c.invalid for c in chunks)
    rate = eta = None
    this_run = [c for c in chunks if c.status == ChunkStatus.done and c.finished_at and c.finished_at >= job.started_at]
    end = job.finished_at or now
    elapsed = (end - job.started_at).total_seconds()
    if this_run and elapsed > 0:
        rate = sum(c.imported + c.invalid for c in this_run) / elapsed
        if job.status in ACTIVE:
            remaining = sum(c.size for c in chunks if c.status in OPEN_CHUNKS)
            eta = remaining / rate if rate > 0 else None
    recent: list[ErrorRecord] = []
    if errors:
        recent = list(session.scalars(
            sa.select(ErrorRecord).where(ErrorRecord.source == "import",
                                         ErrorRecord.message["job_id"].as_integer() == job_id)  # type: ignore[index]
            .order_by(ErrorRecord.id.desc()).limit(errors)))  # type: ignore[union-attr]
    return Progress(job, chunks, imported, invalid, counts, rate, eta, recent)


def list_jobs(session: Session, *, status: str = "", limit: int = 50) -> list[ImportJob]:
    query = sa.select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)  # type: ignore[union-attr]
    if status:
        query = query.where(ImportJob.status == status)
    return list(session.scalars(query))


def unfinished_job(session: Session, *, source: str, count: int, seed: str, chunk_size: int, nat: str) -> int | None:
    """A running job with these parameters (the CLI attaches to it after a crash)."""
    return session.scalar(
        sa.select(ImportJob.id).where(ImportJob.status.in_(ACTIVE), ImportJob.source == source,  # type: ignore[attr-defined]
                                      ImportJob.count == count, ImportJob.seed == seed,
                                      ImportJob.chunk_size == chunk_size, ImportJob.nat == nat)
        .order_by(ImportJob.id.desc()).limit(1))


def _job(session: Session, job_id: int, *, lock: bool = False) -> ImportJob:
    query = sa.select(ImportJob).where(ImportJob.id == job_id)
    if lock and session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update()
    job = session.scalars(query).one_or_none()
    if job is None:
        raise ImportRefused(f"No import with id {job_id}.", 404)
    return job


def request_cancel(session: Session, job_id: int, *, actor: str, actor_id: int | None) -> ImportJob:
    """Ask a running job to stop: chunks in flight finish, the rest are not started."""
    job = _job(session, job_id, lock=True)
    if job.status != ImportStatus.running:
        raise ImportRefused(f"The import is {job.status}; only a running import can be cancelled.")
    job.status = ImportStatus.cancelling
    record_event(session, actor=actor, actor_id=actor_id, action=Action.IMPORT_CANCEL_REQUESTED,
                 subject=f"import:{job_id}", details={"run": job.run})
    return job


def check_new_run(session: Session, job_id: int, *, mode: str, chunk: int | None = None) -> int:
    """The run number a resume or retry would start, or ImportRefused saying why not."""
    job = _job(session, job_id)
    if job.status in ACTIVE:
        raise ImportRefused("The import is still running.")
    query = sa.select(sa.func.count()).select_from(ImportChunk).where(ImportChunk.job_id == job_id)
    if mode == "retry":
        query = query.where(ImportChunk.status == ChunkStatus.failed)
        if chunk is not None:
            query = query.where(ImportChunk.number == chunk)
    else:
        query = query.where(ImportChunk.status != ChunkStatus.done)
    if not session.scalar(query):
        raise ImportRefused("No failed batches to retry." if mode == "retry" else "Nothing left to resume.")
    return job.run + 1
