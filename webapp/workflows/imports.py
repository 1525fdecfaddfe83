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

Exactly once: every write (webapp.services.people_import.runs) is a datasource
transaction whose result DBOS records in the same commit, and people are upserted on
their login uuid, so a replay after a crash, a resume or a retry never writes a person
twice nor counts them twice. Progress is read from the chunk rows; the job row gets the
totals at the end of each run.

Inputs are typed dicts (webapp.services.people_import.orders) and carry `options` (cache directory, fetch retries, OTLP endpoint) taken
from the settings when the run started, so a run recovered after a restart behaves as it
began and needs no configuration at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

from dbos import DBOS, SetWorkflowID, StepOptions

from webapp.config import Settings
from webapp.core.errors import NotAnsweredYet
from webapp.core.models import (
    ChunkStatus,
    ImportStatus,
)
from webapp.services.audit import acting_person
from webapp.services.people_import import jobs, runs, tracing
from webapp.services.people_import.jobs import ImportRefused
from webapp.services.people_import.orders import (
    ChunkResult,
    ChunkSpec,
    ImportOptions,
    ImportOrder,
    JobFacts,
    NewJob,
    NewRun,
    Recorded,
    RunRefused,
    RunSummary,
)
from webapp.services.people_import.source import (
    PageCache,
    PageRequest,
    Source,
    SourceError,
    fetch_page,
)
from webapp.workflows import inspect
from webapp.workflows.datasource import datasource
from webapp.workflows.runtime import MaxStepRetriesExceeded

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

QUEUE = "import"
RECORDED_EVENT = "recorded"
RESULT_POLL_SECONDS = 0.02


def import_options(settings: Settings) -> ImportOptions:
    """What a run needs from the settings, recorded in its input."""
    return ImportOptions(
        cache_dir=str(settings.import_cache_dir.resolve()),
        fetch_timeout=settings.import_fetch_timeout_seconds,
        fetch_max_attempts=settings.import_fetch_max_attempts,
        fetch_retry_interval=settings.import_fetch_retry_interval_seconds,
        fetch_backoff_rate=settings.import_fetch_backoff_rate,
        otlp_endpoint=settings.import_otlp_endpoint,
        prefetch_pages=settings.import_prefetch_pages,
        allowed_hosts=settings.import_allowed_hosts,
        max_page_bytes=settings.import_max_page_bytes,
    )


def start_workflow_id(key: str) -> str:
    return f"import-start-{key}"


def run_workflow_id(job_id: int, run: int, key: str) -> str:
    return f"import-{job_id}-run-{run}-{key}"


def chunk_workflow_ids(job_id: int, run: int) -> str:
    """The prefix of the ids of a run's chunk workflows."""
    return f"import-{job_id}-r{run}-c"


def chunk_workflow_id(job_id: int, run: int, number: int) -> str:
    return f"{chunk_workflow_ids(job_id, run)}{number}"


# Transactions: each state change with DBOS's record of it (webapp.services.people_import.runs)

def _transaction(*, read_committed: bool = False) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """SERIALIZABLE for the job's own rows; READ COMMITTED (on PostgreSQL) for the chunk
    writes, which touch disjoint rows and upsert."""

    def decorate(func: Callable[P, R]) -> Callable[P, R]:
        return datasource.transaction(name=f"import.{func.__name__}",
                                      isolation_level=None if read_committed else "SERIALIZABLE")(func)

    return decorate


@_transaction()
def create_job(order: NewJob) -> JobFacts:
    with acting_person(order.get("token_id"), order.get("actor_id")):
        return runs.create_job(datasource.session(), order, workflow_id=DBOS.workflow_id or "")


@_transaction()
def begin_run(order: NewRun) -> JobFacts | RunRefused:
    with acting_person(order.get("token_id"), order.get("actor_id")):
        return runs.begin_run(datasource.session(), order, workflow_id=DBOS.workflow_id or "")


@_transaction(read_committed=True)
def fail_chunks(job_id: int, numbers: list[int], reason: str, workflow_id: str | None) -> None:
    runs.fail_chunks(datasource.session(), job_id, numbers, reason, workflow_id)


@_transaction()
def finish_run(job_id: int, run: int) -> RunSummary:
    return runs.finish_run(datasource.session(), job_id, run)


@_transaction()
def fail_run(job_id: int, run: int, error: str) -> None:
    runs.fail_run(datasource.session(), job_id, run, error, workflow_id=DBOS.workflow_id)


@_transaction(read_committed=True)
def write_chunk(job: JobFacts, chunk: ChunkSpec) -> ChunkResult:
    return runs.write_chunk(datasource.session(), job, chunk, workflow_id=DBOS.workflow_id)


@_transaction(read_committed=True)
def mark_chunk_failed(job_id: int, number: int, reason: str) -> ChunkResult:
    return runs.mark_chunk_failed(datasource.session(), job_id, number, reason, workflow_id=DBOS.workflow_id)


# Steps -------------------------------------------------------------------------------------

def _fetch_options(job: JobFacts, name: str, *, once: bool = False) -> StepOptions:
    options = job["options"]
    return {
        "name": name,
        "retries_allowed": not once,
        "max_attempts": 1 if once else options["fetch_max_attempts"],
        "interval_seconds": options["fetch_retry_interval"],
        "backoff_rate": options["fetch_backoff_rate"],
        "should_retry": lambda error: not isinstance(error, SourceError) or error.transient,
    }


def prepare_chunk(job: JobFacts, chunk: ChunkSpec) -> dict[str, Any]:
    """Show the chunk as running and bring its page into the cache: one try, as the step
    runs it. A chunk the parent already failed (its page is unavailable) is skipped."""
    status = runs.mark_running(datasource.bound.engine, job["job_id"], chunk["number"], DBOS.workflow_id)
    if status != ChunkStatus.running:
        return {"skip": status}
    return fetch(job, chunk["page"])


def fetch_for_parent(job: JobFacts, page: int) -> dict[str, Any]:
    """The parent's fetch of one page, unless the job is being cancelled."""
    if runs.job_status(datasource.bound.engine, job["job_id"]) == ImportStatus.cancelling:
        return {"page": page, "cancelled": True}
    return fetch(job, page)


def fetch(job: JobFacts, page: int) -> dict[str, Any]:
    """Bring one page into the cache (a no-op when it is there): one try, as the step runs it."""
    request = runs.page_request(job, page)
    with tracing.span(job["options"]["otlp_endpoint"], "import.fetch", DBOS.workflow_id, job_id=job["job_id"],
                      page=page, results=request.results) as current:
        records, fetched = fetch_page(request, PageCache(runs.cache_dir(job)), timeout=job["options"]["fetch_timeout"],
                                      policy=runs.fetch_policy(job))
        current.set_attribute("import.fetched", fetched)
        current.set_attribute("import.records", records)
    return {"page": page, "records": records, "fetched": fetched}


class _Prefetcher:
    """Warms the page cache a few pages ahead of the parent, in threads. Not durable and
    not needed: the parent's fetch step stays the authority, and finds the page cached (or
    waits for the fetch in flight). A prefetch that fails is forgotten; the step retries."""

    def __init__(self, job: JobFacts, pages: list[int]) -> None:
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
            fetch_page(runs.page_request(self.job, page), PageCache(runs.cache_dir(self.job)),
                       timeout=options["fetch_timeout"], policy=runs.fetch_policy(self.job))
        except Exception:  # the parent's step tries again, with retries, and reports
            log.debug("import prefetch failed", exc_info=True)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _failure(error: BaseException) -> str:
    """The last try's error without its "page N: " prefix, and how many tries there were."""
    if isinstance(error, MaxStepRetriesExceeded):
        last = error.errors[-1] if error.errors else error
        return f"{_without_page(last)} (after {len(error.errors)} tries)"
    return _without_page(error)


def _without_page(error: BaseException) -> str:
    text = str(error)
    return text.split(": ", 1)[1] if text.startswith("page ") and ": " in text else text


# Workflows ---------------------------------------------------------------------------------

@DBOS.workflow()
def import_run_workflow(order: ImportOrder) -> RunSummary | RunRefused:
    job = create_job(order) if "spec" in order else begin_run(order)  # type: ignore[arg-type]
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


def _run(job: JobFacts) -> RunSummary:
    job_id, run = job["job_id"], job["run"]
    endpoint = job["options"]["otlp_endpoint"]
    with tracing.span(endpoint, "import.job", DBOS.workflow_id, job_id=job_id, run=run,
                      source=job["source"], chunks=sum(len(n) for _, n in job["pages"])):
        chunk_input = JobFacts(**{**job, "pages": [], "trace": tracing.carrier_of_current()})  # the chunks need no page list
        handles = []
        for page, numbers in job["pages"]:  # every chunk on the queue at once: the workers never wait
            for number, offset, size in numbers:
                with SetWorkflowID(chunk_workflow_id(job_id, run, number)):
                    handles.append(DBOS.enqueue_workflow(
                        QUEUE, import_chunk_workflow, chunk_input,
                        ChunkSpec(number=number, page=page, offset=offset, size=size)))
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
            except (SourceError, MaxStepRetriesExceeded) as error:
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
def import_chunk_workflow(job: JobFacts, chunk: ChunkSpec) -> ChunkResult:
    job_id, number = job["job_id"], chunk["number"]
    with tracing.span(job["options"]["otlp_endpoint"], "import.chunk", DBOS.workflow_id, job["trace"],
                      job_id=job_id, chunk=number, page=chunk["page"], size=chunk["size"]) as current:
        try:
            prepared = DBOS.run_step(_fetch_options(job, "import.prepare_chunk"), prepare_chunk, job, chunk)
        except (SourceError, MaxStepRetriesExceeded) as error:
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


# What the pages and the CLI call -------------------------------------------------------------

ANSWER_SECONDS = 10.0  # how long a page waits for a run to say which job it recorded


def start_run(order: ImportOrder, workflow_id: str, *, timeout_seconds: float = ANSWER_SECONDS) -> Recorded:
    """Start a run (a new job, a resume or a retry) under `workflow_id` and wait until it
    recorded its job: {"job_id", "run"}. Blocking: call it from a worker thread in async code.

    ImportRefused when the run refuses (another run started first, nothing to do);
    NotAnsweredYet when it did not record within `timeout_seconds`."""
    with SetWorkflowID(workflow_id):
        DBOS.start_workflow(import_run_workflow, order)
    recorded = DBOS.get_event(workflow_id, RECORDED_EVENT, timeout_seconds=timeout_seconds)
    if recorded is None:
        raise NotAnsweredYet("The import was accepted but is not recorded yet; see the imports page shortly.")
    if "refused" in recorded:
        raise ImportRefused(recorded["refused"])
    return Recorded(job_id=recorded["job_id"], run=recorded["run"])


async def cancel_waiting_chunks(job_id: int, run: int) -> int:
    """Cancel the run's chunk workflows still waiting in the queue; those running finish."""
    queued = await DBOS.list_workflows_async(workflow_id_prefix=chunk_workflow_ids(job_id, run), status="ENQUEUED",
                                             queue_name=QUEUE, load_input=False, load_output=False)
    if queued:
        await DBOS.cancel_workflows_async([w.workflow_id for w in queued])
    return len(queued)


async def waiting_on(progress: jobs.Progress, cache: PageCache, *, now: datetime) -> str | None:
    """Where a run that is not moving waits, for the operator: its first unfinished chunk,
    and why (not enqueued yet, waiting in the queue, or running with its page not yet
    fetched). None when no chunk is open."""
    open_chunks = sorted((c for c in progress.chunks if c.status in jobs.OPEN_CHUNKS), key=lambda c: c.number)
    if not open_chunks:
        return None
    chunk, job = open_chunks[0], progress.job
    where = f"chunk {chunk.number} (page {chunk.page})"
    found = await inspect.workflow(chunk_workflow_id(job.id, job.run, chunk.number))  # type: ignore[arg-type]
    if found is None:
        return f"{where} is not enqueued yet"
    if found.status == "ENQUEUED":
        running = await inspect.workflows(queue=QUEUE, status="PENDING", queues_only=True)
        return f"{where} waits in the {QUEUE} queue ({len(running)} chunks running)"
    if found.status == "PENDING":
        since = found.updated or found.created
        ran = f"{(now - since).total_seconds():.0f} s" if since else "a while"
        page = PageRequest(Source(job.source_kind, job.source), job.seed, chunk.page,  # type: ignore[arg-type]
                           job.page_size, job.nat)
        why = ("writing its people" if job.source_kind == "file" or cache.has(page)
               else "its page is not fetched yet (the source is slow or failing; fetches are retried)")
        return f"{where} has run for {ran} on executor {found.executor}: {why}"
    return f"{where} is {found.status}"
