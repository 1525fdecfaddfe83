"""Every state change of an import job and its chunks, each with its audit event.

Plain functions over the caller's session; the import workflows (webapp.workflows.imports)
run each one as a DBOS datasource transaction, whose result DBOS records in the same
commit. People are upserted on their login uuid, so a replay after a crash, a resume or a
retry never writes a person twice nor counts them twice. Progress is read from the chunk
rows; the job row gets the totals at the end of each run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from webapp.core.emails import normalise_email
from webapp.core.models import (
    ChunkStatus,
    ErrorRecord,
    ImportChunk,
    ImportedPerson,
    ImportJob,
    ImportStatus,
    Role,
    User,
    utcnow,
)
from webapp.services.audit import Action, record_event
from webapp.services.people_import import tracing
from webapp.services.people_import.orders import (
    ChunkResult,
    ChunkSpec,
    ImportOptions,
    JobFacts,
    NewJob,
    NewRun,
    RunRefused,
    RunSummary,
)
from webapp.services.people_import.plan import plan_chunks
from webapp.services.people_import.reach import FetchPolicy
from webapp.services.people_import.records import InvalidRecord, display_name, person_row
from webapp.services.people_import.source import PageCache, PageRequest, Source, page_records

ERROR_SOURCE = "import"
RESULT_POLL_SECONDS = 0.02
ERROR_TEXT_MAX = 2000
RECORD_TEXT_MAX = 20_000
PERSON_UPDATE_COLUMNS = [
    c.name for c in ImportedPerson.__table__.columns  # type: ignore[attr-defined]
    if c.name not in ("id", "login_uuid", "imported_at")
]


def clip(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Facts handed from step to step ------------------------------------------------------------

def _facts(job: ImportJob, chunks: list[ImportChunk], options: ImportOptions) -> JobFacts:
    pages: dict[int, list[list[int]]] = {}
    for chunk in sorted(chunks, key=lambda c: c.number):
        pages.setdefault(chunk.page, []).append([chunk.number, chunk.page_offset, chunk.size])
    assert job.id is not None
    return JobFacts(job_id=job.id, run=job.run, source_kind=job.source_kind, source=job.source,  # type: ignore[typeddict-item]
                    seed=job.seed, nat=job.nat, page_size=job.page_size, create_users=job.create_users,
                    options=options, pages=sorted([page, numbers] for page, numbers in pages.items()))


def page_request(job: JobFacts, page: int) -> PageRequest:
    return PageRequest(Source(job["source_kind"], job["source"]), job["seed"], page, job["page_size"], job["nat"])


def create_job(session: Session, order: NewJob, *, workflow_id: str) -> JobFacts:
    """The job row (run 1), a row per chunk, and the audit event."""
    spec = order["spec"]
    now = utcnow()
    job = ImportJob(
        source=spec["source"], source_kind=spec["source_kind"], count=spec["count"], seed=spec["seed"],
        nat=spec["nat"], chunk_size=spec["chunk_size"], page_size=spec["page_size"],
        create_users=spec["create_users"], status=ImportStatus.running, run=1,
        workflow_id=workflow_id, created_by=order["actor"], created_at=now, started_at=now,
        updated_at=now,
    )
    plan = plan_chunks(spec["count"], spec["chunk_size"], spec["page_size"])
    job.chunks_total = len(plan)
    session.add(job)
    session.flush()
    assert job.id is not None
    session.execute(sa.insert(ImportChunk), [
        {"job_id": job.id, "number": c.number, "page": c.page, "page_offset": c.page_offset, "size": c.size,
         "status": ChunkStatus.queued, "imported": 0, "invalid": 0, "attempts": 0}
        for c in plan
    ])
    record_event(session, actor=order["actor"], actor_id=order.get("actor_id"), action=Action.IMPORT_STARTED,
                 subject=f"import:{job.id}",
                 details={"source": spec["source"], "count": spec["count"], "seed": spec["seed"],
                          "chunk_size": spec["chunk_size"], "chunks": len(plan)})
    chunks = list(session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job.id)))
    return _facts(job, chunks, order["options"])


def begin_run(session: Session, order: NewRun, *, workflow_id: str) -> JobFacts | RunRefused:
    """Resume (every chunk not done) or retry (failed chunks, or one of them) as run `run`;
    refused while a run is going on or when there is nothing to do."""
    job = session.get(ImportJob, order["job_id"])
    if job is None:
        return {"refused": "No such import."}
    if job.status in (ImportStatus.running, ImportStatus.cancelling):
        return {"refused": "The import is still running."}
    if job.run != order["run"] - 1:
        return {"refused": "Another run of this import started first."}
    query = sa.select(ImportChunk).where(ImportChunk.job_id == job.id)
    if order["mode"] == "retry":
        query = query.where(ImportChunk.status == ChunkStatus.failed)
        if order.get("chunk") is not None:
            query = query.where(ImportChunk.number == order["chunk"])
    else:
        query = query.where(ImportChunk.status != ChunkStatus.done)
    chunks = list(session.scalars(query))
    if not chunks:
        return {"refused": "No failed chunks to retry." if order["mode"] == "retry" else "Nothing left to resume."}
    for chunk in chunks:
        chunk.status, chunk.error = ChunkStatus.queued, None
    now = utcnow()
    job.status, job.run, job.workflow_id = ImportStatus.running, order["run"], workflow_id
    job.started_at = job.updated_at = now
    job.finished_at, job.error = None, None
    action = Action.IMPORT_RETRIED if order["mode"] == "retry" else Action.IMPORT_RESUMED
    record_event(session, actor=order["actor"], actor_id=order.get("actor_id"), action=action,
                 subject=f"import:{job.id}", details={"run": job.run, "chunks": len(chunks)})
    return _facts(job, chunks, order["options"])


def fail_chunks(session: Session, job_id: int, numbers: list[int], reason: str, workflow_id: str | None) -> None:
    """The page behind these chunks could not be read: those not started yet fail now
    (their workflows then skip); those already running retry the page themselves."""
    now = utcnow()
    session.execute(
        sa.update(ImportChunk)
        .where(ImportChunk.job_id == job_id, ImportChunk.number.in_(numbers),  # type: ignore[attr-defined]
               ImportChunk.status == ChunkStatus.queued)
        .values(status=ChunkStatus.failed, error=clip(reason), finished_at=now)
    )
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id,
                            message={"job_id": job_id, "chunks": numbers, "reason": clip(reason)}))


def finish_run(session: Session, job_id: int, run: int) -> RunSummary:
    """Totals from the chunk rows; chunks this run left unfinished become cancelled (job
    cancelled) or failed; the job's status and the audit event."""
    job = session.get_one(ImportJob, job_id)
    if job.run != run or job.status not in (ImportStatus.running, ImportStatus.cancelling):
        return summary(job)  # a replay after the run was already finished
    cancelling = job.status == ImportStatus.cancelling
    now = utcnow()
    session.execute(
        sa.update(ImportChunk)
        .where(ImportChunk.job_id == job_id,
               ImportChunk.status.in_([ChunkStatus.queued, ChunkStatus.running]))  # type: ignore[attr-defined]
        .values(status=ChunkStatus.cancelled if cancelling else ChunkStatus.failed,
                error=None if cancelling else "The chunk's workflow ended without writing.",
                finished_at=now)
    )
    counts = dict(session.execute(
        sa.select(ImportChunk.status, sa.func.count()).where(ImportChunk.job_id == job_id)
        .group_by(ImportChunk.status)).all())
    imported, invalid = session.execute(
        sa.select(sa.func.coalesce(sa.func.sum(ImportChunk.imported), 0),
                  sa.func.coalesce(sa.func.sum(ImportChunk.invalid), 0))
        .where(ImportChunk.job_id == job_id)).one()
    job.imported, job.invalid = int(imported), int(invalid)
    job.chunks_done = counts.get(ChunkStatus.done, 0)
    job.chunks_failed = counts.get(ChunkStatus.failed, 0)
    if job.chunks_done == job.chunks_total:
        job.status = ImportStatus.finished
    elif cancelling:
        job.status = ImportStatus.cancelled
    else:
        job.status = ImportStatus.failed
    job.finished_at = job.updated_at = now
    action = {ImportStatus.finished: Action.IMPORT_FINISHED, ImportStatus.cancelled: Action.IMPORT_CANCELLED}.get(
        job.status, Action.IMPORT_FAILED)
    record_event(session, actor="workflow", action=action, subject=f"import:{job_id}",
                 details={"run": run, "imported": job.imported, "invalid": job.invalid,
                          "chunks_done": job.chunks_done, "chunks_failed": job.chunks_failed})
    return summary(job)


def fail_run(session: Session, job_id: int, run: int, error: str, *, workflow_id: str | None) -> None:
    """The parent workflow itself failed (not a chunk): the job says so and can be resumed."""
    job = session.get_one(ImportJob, job_id)
    if job.run != run or job.status not in (ImportStatus.running, ImportStatus.cancelling):
        return
    now = utcnow()
    job.status, job.error, job.finished_at, job.updated_at = ImportStatus.failed, clip(error), now, now
    session.execute(
        sa.update(ImportChunk)
        .where(ImportChunk.job_id == job_id, ImportChunk.status == ChunkStatus.queued)
        .values(status=ChunkStatus.failed, error=clip(f"The run stopped: {error}"), finished_at=now)
    )
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id,
                            message={"job_id": job_id, "run": run, "reason": clip(error)}))
    record_event(session, actor="workflow", action=Action.IMPORT_FAILED, subject=f"import:{job_id}",
                 details={"run": run, "error": clip(error, 500)})


def summary(job: ImportJob) -> RunSummary:
    return {"job_id": job.id, "status": str(job.status), "imported": job.imported, "invalid": job.invalid,
            "chunks_done": job.chunks_done, "chunks_failed": job.chunks_failed, "chunks_total": job.chunks_total}


# Transactions: one chunk -------------------------------------------------------------------

def mark_running(engine: sa.Engine, job_id: int, number: int, workflow_id: str | None) -> str:
    """Show a queued chunk as running (a plain, idempotent update for the progress display;
    the chunk's transaction decides what is written). Returns the chunk's status."""
    with engine.begin() as conn:
        conn.execute(
            sa.update(ImportChunk)
            .where(ImportChunk.job_id == job_id, ImportChunk.number == number,
                   ImportChunk.status == ChunkStatus.queued)
            .values(status=ChunkStatus.running, started_at=utcnow(), workflow_id=workflow_id)
        )
        return str(conn.scalar(sa.select(ImportChunk.status).where(ImportChunk.job_id == job_id,
                                                                   ImportChunk.number == number)))


def job_status(engine: sa.Engine, job_id: int) -> str:
    with engine.connect() as conn:
        return str(conn.scalar(sa.select(ImportJob.status).where(ImportJob.id == job_id)))


def _insert(session: Any) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def _upsert_users(session: Any, rows: list[dict[str, Any]], now: Any) -> dict[str, int]:
    """Create a member without a password for each email, or refresh the name of one that is
    still exactly that (no password, member role): an import never touches a person who
    can sign in or holds a role. Returns email -> user id."""
    names: dict[str, str] = {}
    for row in rows:
        names[normalise_email(row["email"])] = display_name(row)
    if not names:
        return {}
    users = User.__table__  # type: ignore[attr-defined]
    insert = _insert(session)(users)
    statement = insert.on_conflict_do_update(
        index_elements=[users.c.email], set_={"name": insert.excluded.name},
        where=sa.and_(users.c.password_hash.is_(None), users.c.role == Role.member),
    )
    session.execute(statement, [
        {"email": email, "name": name, "department": "", "title": "", "role": Role.member,
         "password_hash": None, "active": True, "created_at": now}
        for email, name in sorted(names.items())
    ])
    found = session.execute(sa.select(users.c.email, users.c.id).where(users.c.email.in_(list(names)))).all()
    return dict(found)  # type: ignore[arg-type]


def write_chunk(session: Session, job: JobFacts, chunk: ChunkSpec, *, workflow_id: str | None) -> ChunkResult:
    """Validate the chunk's records and write them: one upsert of the valid people, one
    error record per invalid one, and the chunk's counts, all in this one transaction."""
    job_id, number = job["job_id"], chunk["number"]
    row = session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id,
                                                       ImportChunk.number == number)).one()
    if row.status == ChunkStatus.done:  # a chunk repeated by a resume or retry
        return {"status": "done", "imported": row.imported, "invalid": row.invalid}
    row.attempts += 1
    row.workflow_id = workflow_id
    if session.scalar(sa.select(ImportJob.status).where(ImportJob.id == job_id)) == ImportStatus.cancelling:
        row.status, row.finished_at = ChunkStatus.cancelled, utcnow()
        return {"status": "cancelled", "imported": 0, "invalid": 0}
    records = page_records(page_request(job, chunk["page"]), PageCache(cache_dir(job)))
    records = records[chunk["offset"]:chunk["offset"] + chunk["size"]]
    now = utcnow()
    people: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    for index, record in enumerate(records):
        try:
            person = person_row(record)
        except InvalidRecord as invalid:
            errors.append({"at": now, "source": ERROR_SOURCE, "workflow_id": workflow_id, "message": {
                "job_id": job_id, "chunk": number, "page": chunk["page"], "index": chunk["offset"] + index,
                "position": (chunk["page"] - 1) * job["page_size"] + chunk["offset"] + index,
                "reason": str(invalid), "record": _record_for_log(record)}})
            continue
        person["import_job_id"] = job_id
        person["imported_at"] = person["updated_at"] = now
        person["user_id"] = None
        people[person["login_uuid"]] = person  # a uuid twice in one chunk: the later record wins
    rows = [people[key] for key in sorted(people)]  # one lock order for concurrent chunks
    with tracing.span(job["options"]["otlp_endpoint"], "import.insert", workflow_id, job_id=job_id,
                      chunk=number, records=len(rows), invalid=len(errors)):
        if rows and job["create_users"]:
            user_ids = _upsert_users(session, rows, now)
            for person in rows:
                person["user_id"] = user_ids.get(normalise_email(person["email"]))
        if rows:
            table = ImportedPerson.__table__  # type: ignore[attr-defined]
            insert = _insert(session)(table)
            session.execute(insert.on_conflict_do_update(
                index_elements=[table.c.login_uuid],
                set_={name: insert.excluded[name] for name in PERSON_UPDATE_COLUMNS}), rows)
        if errors:
            session.execute(sa.insert(ErrorRecord), errors)
    row.status, row.imported, row.invalid = ChunkStatus.done, len(rows), len(errors)
    row.finished_at, row.error = now, None
    if rows and job["create_users"]:
        record_event(session, actor="workflow", action=Action.IMPORT_USERS_UPSERTED, subject=f"import:{job_id}",
                     details={"chunk": number, "people": len(rows)})
    return {"status": "done", "imported": len(rows), "invalid": len(errors)}


def _record_for_log(record: Any) -> Any:
    """The record as it came, unless it is huge or holds what PostgreSQL cannot store (NUL,
    lone surrogates): then its escaped JSON text, clipped."""
    try:
        text = json.dumps(record, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError):
        return {"escaped": clip(json.dumps(record, ensure_ascii=True, default=repr).replace("\\u0000", "\\0"),
                                 RECORD_TEXT_MAX)}
    if len(text) > RECORD_TEXT_MAX or "\\u0000" in text:
        return {"escaped": clip(text.replace("\\u0000", "\\0"), RECORD_TEXT_MAX)}
    return record


def mark_chunk_failed(session: Session, job_id: int, number: int, reason: str, *,
                      workflow_id: str | None) -> ChunkResult:
    row = session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id,
                                                       ImportChunk.number == number)).one()
    row.status, row.error, row.finished_at = ChunkStatus.failed, clip(reason), utcnow()
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id,
                            message={"job_id": job_id, "chunk": number, "reason": clip(reason)}))
    return {"status": "failed", "imported": 0, "invalid": 0, "error": clip(reason)}


def fetch_policy(job: JobFacts) -> FetchPolicy:
    """Where the run may fetch from and how much, as fixed when it started."""
    options = job["options"]
    return FetchPolicy.from_text(options["allowed_hosts"], options["max_page_bytes"])


def cache_dir(job: JobFacts) -> Path:
    return Path(job["options"]["cache_dir"])
