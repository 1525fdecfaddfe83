"""Bulk import of people: one parent workflow per run of a job, one child per chunk.

    import_run_workflow(order)                      parent, id import-start-<key> (first run)
                                                    or import-<job>-run-<n>-<key> (resume, retry)
      1. create_job / begin_run   transaction: the job and its chunk rows (or the run's
                                  chunks), audit import.started / resumed / retried;
                                  set_event "recorded" answers the page or the CLI
      2. enqueue                  one import_chunk_workflow per chunk on the `import`
                                  queue (worker concurrency and rate limit from settings),
                                  all at once, so the workers never wait for the parent
      3. per page, in order:
           fetch                  step, retried with backoff while the error is transient;
                                  writes the page to the disk cache (once per page, ever);
                                  stops here if the job is being cancelled. A few pages
                                  are prefetched ahead in threads (not durable, only warm)
         a page that cannot be fetched fails its chunks that have not started; after that
         the next pages get one try each until one works (a dead source fails fast)
      4. wait for every chunk, then finish_run: counts from the chunk rows, status, audit
    import_chunk_workflow(job, chunk)               child, id import-<job>-r<run>-c<number>
      1. prepare_chunk            step: show the chunk as running (skip it if the parent
                                  failed it); the page from the cache, from the parent's
                                  fetch in flight, or fetched here (retried like the parent's)
      2. write_chunk              one transaction: skip a chunk already done, or mark it
                                  cancelled if the job is being cancelled; else validate,
                                  upsert the valid people in one batched statement (and
                                  their users), one error record per invalid one, and the
                                  chunk row's counts
         or mark_chunk_failed     when the page cannot be had or the write fails

Exactly once: every write is a datasource transaction whose result DBOS records in the
same commit, and people are upserted on their login uuid, so a replay after a crash, a
resume or a retry never writes a person twice nor counts them twice. Progress is read
from the chunk rows; the job row gets the totals at the end of each run.

Inputs carry an `options` dict (cache directory, fetch retries, OTLP endpoint) taken
from the settings when the run started, so a run recovered after a restart behaves as it
began and needs no configuration at import time.
"""

from __future__ import annotations

import functools
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID, StepOptions
from dbos._error import DBOSMaxStepRetriesExceeded  # not exported by dbos 3.4
from sqlalchemy.dialects import postgresql, sqlite

from webapp.services.accounts import normalise_email
from webapp.services.audit import record_event
from webapp.config import Settings
from webapp.core.db import datasource
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
from webapp.services.people_import import tracing
from webapp.services.people_import.plan import plan_chunks
from webapp.services.people_import.records import InvalidRecord, display_name, person_row
from webapp.services.people_import.source import (
    PageCache,
    PageRequest,
    Source,
    SourceError,
    fetch_page,
    page_records,
)

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

QUEUE = "import"
RECORDED_EVENT = "recorded"
ERROR_SOURCE = "import"
RESULT_POLL_SECONDS = 0.02
ERROR_TEXT_MAX = 2000
RECORD_TEXT_MAX = 20_000
PERSON_UPDATE_COLUMNS = [
    c.name for c in ImportedPerson.__table__.columns  # type: ignore[attr-defined]
    if c.name not in ("id", "login_uuid", "imported_at")
]


def import_options(settings: Settings) -> dict[str, Any]:
    """What a run needs from the settings, recorded in its input."""
    return {
        "cache_dir": str(settings.import_cache_dir.resolve()),
        "fetch_timeout": settings.import_fetch_timeout_seconds,
        "fetch_max_attempts": settings.import_fetch_max_attempts,
        "fetch_retry_interval": settings.import_fetch_retry_interval_seconds,
        "fetch_backoff_rate": settings.import_fetch_backoff_rate,
        "otlp_endpoint": settings.import_otlp_endpoint,
        "prefetch_pages": settings.import_prefetch_pages,
    }


def start_workflow_id(key: str) -> str:
    return f"import-start-{key}"


def run_workflow_id(job_id: int, run: int, key: str) -> str:
    return f"import-{job_id}-run-{run}-{key}"


def chunk_workflow_id(job_id: int, run: int, number: int) -> str:
    return f"import-{job_id}-r{run}-c{number}"


def _transaction(*, read_committed: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """A datasource transaction; READ COMMITTED on PostgreSQL for the chunk writes, which
    touch disjoint rows and upsert (SQLite has one writer at a time anyway)."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        name = f"import.{func.__name__}"

        @functools.wraps(func)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            bound = datasource.bound
            level = "READ COMMITTED" if read_committed and bound.engine.dialect.name == "postgresql" else "SERIALIZABLE"
            return bound.run_tx_step({"name": name, "isolation_level": level}, func, *args, **kwargs)  # type: ignore[arg-type]

        return run

    return decorate


def _clip(text: str, limit: int = ERROR_TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# Facts handed from step to step ------------------------------------------------------------

def _facts(job: ImportJob, chunks: list[ImportChunk], options: dict[str, Any]) -> dict[str, Any]:
    pages: dict[int, list[list[int]]] = {}
    for chunk in sorted(chunks, key=lambda c: c.number):
        pages.setdefault(chunk.page, []).append([chunk.number, chunk.page_offset, chunk.size])
    return {
        "job_id": job.id, "run": job.run, "source_kind": job.source_kind, "source": job.source,
        "seed": job.seed, "nat": job.nat, "page_size": job.page_size, "create_users": job.create_users,
        "options": options, "pages": sorted([page, numbers] for page, numbers in pages.items()),
    }


def _page_request(job: dict[str, Any], page: int) -> PageRequest:
    return PageRequest(Source(job["source_kind"], job["source"]), job["seed"], page, job["page_size"], job["nat"])


# Transactions: the job ---------------------------------------------------------------------

@_transaction()
def create_job(order: dict[str, Any]) -> dict[str, Any]:
    """The job row (run 1), a row per chunk, and the audit event."""
    session = datasource.session()
    spec = order["spec"]
    now = utcnow()
    job = ImportJob(
        source=spec["source"], source_kind=spec["source_kind"], count=spec["count"], seed=spec["seed"],
        nat=spec["nat"], chunk_size=spec["chunk_size"], page_size=spec["page_size"],
        create_users=spec["create_users"], status=ImportStatus.running, run=1,
        workflow_id=DBOS.workflow_id or "", created_by=order["actor"], created_at=now, started_at=now,
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
    record_event(session, actor=order["actor"], actor_id=order.get("actor_id"), action="import.started",
                 subject=f"import:{job.id}",
                 details={"source": spec["source"], "count": spec["count"], "seed": spec["seed"],
                          "chunk_size": spec["chunk_size"], "chunks": len(plan)})
    chunks = list(session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job.id)))
    return _facts(job, chunks, order["options"])


@_transaction()
def begin_run(order: dict[str, Any]) -> dict[str, Any]:
    """Resume (every chunk not done) or retry (failed chunks, or one of them) as run `run`;
    refused while a run is going on or when there is nothing to do."""
    session = datasource.session()
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
    job.status, job.run, job.workflow_id = ImportStatus.running, order["run"], DBOS.workflow_id or ""
    job.started_at = job.updated_at = now
    job.finished_at, job.error = None, None
    action = "import.retried" if order["mode"] == "retry" else "import.resumed"
    record_event(session, actor=order["actor"], actor_id=order.get("actor_id"), action=action,
                 subject=f"import:{job.id}", details={"run": job.run, "chunks": len(chunks)})
    return _facts(job, chunks, order["options"])


@_transaction(read_committed=True)
def fail_chunks(job_id: int, numbers: list[int], reason: str, workflow_id: str | None) -> None:
    """The page behind these chunks could not be read: those not started yet fail now
    (their workflows then skip); those already running retry the page themselves."""
    session = datasource.session()
    now = utcnow()
    session.execute(
        sa.update(ImportChunk)
        .where(ImportChunk.job_id == job_id, ImportChunk.number.in_(numbers),  # type: ignore[attr-defined]
               ImportChunk.status == ChunkStatus.queued)
        .values(status=ChunkStatus.failed, error=_clip(reason), finished_at=now)
    )
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=workflow_id,
                            message={"job_id": job_id, "chunks": numbers, "reason": _clip(reason)}))


@_transaction()
def finish_run(job_id: int, run: int) -> dict[str, Any]:
    """Totals from the chunk rows; chunks this run left unfinished become cancelled (job
    cancelled) or failed; the job's status and the audit event."""
    session = datasource.session()
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
    action = {ImportStatus.finished: "import.finished", ImportStatus.cancelled: "import.cancelled"}.get(
        job.status, "import.failed")
    record_event(session, actor="workflow", action=action, subject=f"import:{job_id}",
                 details={"run": run, "imported": job.imported, "invalid": job.invalid,
                          "chunks_done": job.chunks_done, "chunks_failed": job.chunks_failed})
    return summary(job)


@_transaction()
def fail_run(job_id: int, run: int, error: str) -> None:
    """The parent workflow itself failed (not a chunk): the job says so and can be resumed."""
    session = datasource.session()
    job = session.get_one(ImportJob, job_id)
    if job.run != run or job.status not in (ImportStatus.running, ImportStatus.cancelling):
        return
    now = utcnow()
    job.status, job.error, job.finished_at, job.updated_at = ImportStatus.failed, _clip(error), now, now
    session.execute(
        sa.update(ImportChunk)
        .where(ImportChunk.job_id == job_id, ImportChunk.status == ChunkStatus.queued)
        .values(status=ChunkStatus.failed, error=_clip(f"The run stopped: {error}"), finished_at=now)
    )
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=DBOS.workflow_id,
                            message={"job_id": job_id, "run": run, "reason": _clip(error)}))
    record_event(session, actor="workflow", action="import.failed", subject=f"import:{job_id}",
                 details={"run": run, "error": _clip(error, 500)})


def summary(job: ImportJob) -> dict[str, Any]:
    return {"job_id": job.id, "status": str(job.status), "imported": job.imported, "invalid": job.invalid,
            "chunks_done": job.chunks_done, "chunks_failed": job.chunks_failed, "chunks_total": job.chunks_total}


# Transactions: one chunk -------------------------------------------------------------------

def mark_running(job_id: int, number: int, workflow_id: str | None) -> str:
    """Show a queued chunk as running (a plain, idempotent update for the progress display;
    the chunk's transaction decides what is written). Returns the chunk's status."""
    with datasource.bound.engine.begin() as conn:
        conn.execute(
            sa.update(ImportChunk)
            .where(ImportChunk.job_id == job_id, ImportChunk.number == number,
                   ImportChunk.status == ChunkStatus.queued)
            .values(status=ChunkStatus.running, started_at=utcnow(), workflow_id=workflow_id)
        )
        return str(conn.scalar(sa.select(ImportChunk.status).where(ImportChunk.job_id == job_id,
                                                                   ImportChunk.number == number)))


def job_status(job_id: int) -> str:
    with datasource.bound.engine.connect() as conn:
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


@_transaction(read_committed=True)
def write_chunk(job: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
    """Validate the chunk's records and write them: one upsert of the valid people, one
    error record per invalid one, and the chunk's counts, all in this one transaction."""
    session = datasource.session()
    job_id, number = job["job_id"], chunk["number"]
    row = session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id,
                                                       ImportChunk.number == number)).one()
    if row.status == ChunkStatus.done:  # a chunk repeated by a resume or retry
        return {"status": "done", "imported": row.imported, "invalid": row.invalid}
    row.attempts += 1
    row.workflow_id = DBOS.workflow_id
    if session.scalar(sa.select(ImportJob.status).where(ImportJob.id == job_id)) == ImportStatus.cancelling:
        row.status, row.finished_at = ChunkStatus.cancelled, utcnow()
        return {"status": "cancelled", "imported": 0, "invalid": 0}
    records = page_records(_page_request(job, chunk["page"]), PageCache(_cache_dir(job)))
    records = records[chunk["offset"]:chunk["offset"] + chunk["size"]]
    now = utcnow()
    people: dict[str, dict[str, Any]] = {}
    errors: list[dict[str, Any]] = []
    workflow_id = DBOS.workflow_id
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
        record_event(session, actor="workflow", action="import.users_upserted", subject=f"import:{job_id}",
                     details={"chunk": number, "people": len(rows)})
    return {"status": "done", "imported": len(rows), "invalid": len(errors)}


def _record_for_log(record: Any) -> Any:
    """The record as it came, unless it is huge or holds what PostgreSQL cannot store (NUL,
    lone surrogates): then its escaped JSON text, clipped."""
    try:
        text = json.dumps(record, ensure_ascii=False)
        text.encode("utf-8")
    except (TypeError, ValueError):
        return {"escaped": _clip(json.dumps(record, ensure_ascii=True, default=repr).replace("\\u0000", "\\0"),
                                 RECORD_TEXT_MAX)}
    if len(text) > RECORD_TEXT_MAX or "\\u0000" in text:
        return {"escaped": _clip(text.replace("\\u0000", "\\0"), RECORD_TEXT_MAX)}
    return record


@_transaction(read_committed=True)
def mark_chunk_failed(job_id: int, number: int, reason: str) -> dict[str, Any]:
    session = datasource.session()
    row = session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id,
                                                       ImportChunk.number == number)).one()
    row.status, row.error, row.finished_at = ChunkStatus.failed, _clip(reason), utcnow()
    session.add(ErrorRecord(source=ERROR_SOURCE, workflow_id=DBOS.workflow_id,
                            message={"job_id": job_id, "chunk": number, "reason": _clip(reason)}))
    return {"status": "failed", "imported": 0, "invalid": 0, "error": _clip(reason)}


# Steps -------------------------------------------------------------------------------------

def _cache_dir(job: dict[str, Any]) -> Path:
    return Path(job["options"]["cache_dir"])


def _fetch_options(job: dict[str, Any], name: str, *, once: bool = False) -> StepOptions:
    options = job["options"]
    return {
        "name": name,
        "retries_allowed": not once,
        "max_attempts": 1 if once else options["fetch_max_attempts"],
        "interval_seconds": options["fetch_retry_interval"],
        "backoff_rate": options["fetch_backoff_rate"],
        "should_retry": lambda error: not isinstance(error, SourceError) or error.transient,
    }


def prepare_chunk(job: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
    """Show the chunk as running and bring its page into the cache: one try, as the step
    runs it. A chunk the parent already failed (its page is unavailable) is skipped."""
    status = mark_running(job["job_id"], chunk["number"], DBOS.workflow_id)
    if status != ChunkStatus.running:
        return {"skip": status}
    return fetch(job, chunk["page"])


def fetch_for_parent(job: dict[str, Any], page: int) -> dict[str, Any]:
    """The parent's fetch of one page, unless the job is being cancelled."""
    if job_status(job["job_id"]) == ImportStatus.cancelling:
        return {"page": page, "cancelled": True}
    return fetch(job, page)


def fetch(job: dict[str, Any], page: int) -> dict[str, Any]:
    """Bring one page into the cache (a no-op when it is there): one try, as the step runs it."""
    request = _page_request(job, page)
    with tracing.span(job["options"]["otlp_endpoint"], "import.fetch", DBOS.workflow_id, job_id=job["job_id"],
                      page=page, results=request.results) as current:
        records, fetched = fetch_page(request, PageCache(_cache_dir(job)), timeout=job["options"]["fetch_timeout"])
        current.set_attribute("import.fetched", fetched)
        current.set_attribute("import.records", records)
    return {"page": page, "records": records, "fetched": fetched}


class _Prefetcher:
    """Warms the page cache a few pages ahead of the parent, in threads. Not durable and
    not needed: the parent's fetch step stays the authority, and finds the page cached (or
    waits for the fetch in flight). A prefetch that fails is forgotten; the step retries."""

    def __init__(self, job: dict[str, Any], pages: list[int]) -> None:
        window = int(job["options"].get("prefetch_pages", 0))
        self.job, self.pages, self.window = job, pages, window
        self.pool = (ThreadPoolExecutor(max_workers=window, thread_name_prefix="import-prefetch")
                     if window and job["source_kind"] == "url" and len(pages) > 1 else None)
        self.submitted: set[int] = set()

    def parent_at(self, index: int) -> None:
        if self.pool is None:
            return
        for ahead in range(index + 1, min(len(self.pages), index + 1 + self.window)):
            if ahead not in self.submitted:
                self.submitted.add(ahead)
                self.pool.submit(self._warm, self.pages[ahead])

    def _warm(self, page: int) -> None:
        options = self.job["options"]
        try:
            fetch_page(_page_request(self.job, page), PageCache(_cache_dir(self.job)), timeout=options["fetch_timeout"])
        except Exception:  # the parent's step tries again, with retries, and reports
            log.debug("import prefetch failed", exc_info=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _failure(error: BaseException) -> str:
    """The last try's error without its "page N: " prefix, and how many tries there were."""
    if isinstance(error, DBOSMaxStepRetriesExceeded):
        last = error.errors[-1] if error.errors else error
        return f"{_without_page(last)} (after {len(error.errors)} tries)"
    return _without_page(error)


def _without_page(error: BaseException) -> str:
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("page ") and ": " in text else text


# Workflows ---------------------------------------------------------------------------------

@DBOS.workflow()
def import_run_workflow(order: dict[str, Any]) -> dict[str, Any]:
    job = create_job(order) if order.get("job_id") is None else begin_run(order)
    DBOS.set_event(RECORDED_EVENT, {"refused": job["refused"]} if "refused" in job else
                   {"job_id": job["job_id"], "run": job["run"]})
    if "refused" in job:
        return job
    try:
        return _run(job)
    except Exception as error:  # a bug or a database outage: leave the job resumable, not "running"
        log.exception("import run failed", extra={"job_id": job["job_id"]})
        fail_run(job["job_id"], job["run"], f"{type(error).__name__}: {error}")
        raise


def _run(job: dict[str, Any]) -> dict[str, Any]:
    job_id, run = job["job_id"], job["run"]
    endpoint = job["options"]["otlp_endpoint"]
    with tracing.span(endpoint, "import.job", DBOS.workflow_id, job_id=job_id, run=run,
                      source=job["source"], chunks=sum(len(n) for _, n in job["pages"])):
        chunk_input = {key: value for key, value in job.items() if key != "pages"}
        chunk_input["trace"] = tracing.carrier_of_current()
        handles = []
        for page, numbers in job["pages"]:  # every chunk on the queue at once: the workers never wait
            for number, offset, size in numbers:
                with SetWorkflowID(chunk_workflow_id(job_id, run, number)):
                    handles.append(DBOS.enqueue_workflow(
                        QUEUE, import_chunk_workflow, chunk_input,
                        {"number": number, "page": page, "offset": offset, "size": size}))
        # Then the pages, in order, ahead of the chunks that read them (a chunk that gets to
        # its page first waits for this fetch, or fetches the page itself in another process).
        # After a page fails for good, the next ones get one try each until one works, so a
        # dead source fails fast.
        source_down = False
        prefetcher = _Prefetcher(job, [page for page, _ in job["pages"]])
        for index, (page, numbers) in enumerate(job["pages"]):
            prefetcher.parent_at(index)
            try:
                fetched = DBOS.run_step(_fetch_options(job, "import.fetch", once=source_down),
                                        fetch_for_parent, job, page)
            except (SourceError, DBOSMaxStepRetriesExceeded) as error:
                failure = f"page {page} could not be fetched: {_failure(error)}"
                log.warning("import page failed", extra={"job_id": job_id, "page": page, "error": failure})
                fail_chunks(job_id, [number for number, _, _ in numbers], failure, DBOS.workflow_id)
                source_down = True
                continue
            if fetched.get("cancelled"):
                break
            source_down = False
        prefetcher.close()
        for handle in handles:
            try:
                handle.get_result(polling_interval_sec=RESULT_POLL_SECONDS)
            except Exception:  # cancelled or crashed chunks: finish_run sorts out their rows
                log.warning("import chunk ended without a result", extra={"chunk_workflow": handle.workflow_id})
        return finish_run(job_id, run)


@DBOS.workflow()
def import_chunk_workflow(job: dict[str, Any], chunk: dict[str, Any]) -> dict[str, Any]:
    job_id, number = job["job_id"], chunk["number"]
    with tracing.span(job["options"]["otlp_endpoint"], "import.chunk", DBOS.workflow_id, job["trace"],
                      job_id=job_id, chunk=number, page=chunk["page"], size=chunk["size"]) as current:
        try:
            prepared = DBOS.run_step(_fetch_options(job, "import.prepare_chunk"), prepare_chunk, job, chunk)
        except (SourceError, DBOSMaxStepRetriesExceeded) as error:
            return mark_chunk_failed(job_id, number, f"page {chunk['page']} could not be fetched: {_failure(error)}")
        if "skip" in prepared:  # failed by the parent, or done or cancelled already
            current.set_attribute("import.state", prepared["skip"])
            return {"status": prepared["skip"], "imported": 0, "invalid": 0}
        try:
            result = write_chunk(job, chunk)
        except Exception as error:  # a database error the validation did not foresee
            log.exception("import chunk failed", extra={"job_id": job_id, "chunk": number})
            return mark_chunk_failed(job_id, number, f"{type(error).__name__}: {error}")
        current.set_attribute("import.state", result["status"])
        current.set_attribute("import.imported", result["imported"])
        current.set_attribute("import.invalid", result["invalid"])
        return result
