"""What an import run carries: its order (a new job, or a resume or retry of one), the
facts its steps hand on, and what its chunks and the run return.

All typed dicts, so DBOS records them as the plain values they are and a run recovered
after a restart reads them back the same way.
"""

from __future__ import annotations

from typing import Literal, NotRequired, TypedDict


class ImportOptions(TypedDict):
    """What a run needs from the settings, fixed into its input when it starts."""

    cache_dir: str
    fetch_timeout: float
    fetch_max_attempts: int
    fetch_retry_interval: float
    fetch_backoff_rate: float
    otlp_endpoint: str | None
    prefetch_pages: int
    allowed_hosts: str  # IMPORT_ALLOWED_HOSTS (webapp.services.people_import.reach)
    max_page_bytes: int


class JobSpec(TypedDict):
    """A new job as the form or the CLI asked for it, checked (webapp.services.people_import.jobs.job_spec)."""

    source: str
    source_kind: Literal["url", "file"]
    count: int
    seed: str
    nat: str
    chunk_size: int
    page_size: int
    create_users: bool


class NewJob(TypedDict):
    spec: JobSpec
    actor: str
    actor_id: int | None
    options: ImportOptions
    token_id: NotRequired[int | None]  # the API token it was ordered with, for the audit


class NewRun(TypedDict):
    """Resume (every chunk not done) or retry (failed chunks, or `chunk` alone) as run `run`."""

    job_id: int
    run: int
    mode: Literal["resume", "retry"]
    chunk: int | None
    actor: str
    actor_id: int | None
    options: ImportOptions
    token_id: NotRequired[int | None]  # the API token it was ordered with, for the audit


ImportOrder = NewJob | NewRun


class JobFacts(TypedDict):
    """What the run's steps and its chunks need about the job; `pages` lists each page with
    its chunks as [number, offset in the page, size]."""

    job_id: int
    run: int
    source_kind: Literal["url", "file"]
    source: str
    seed: str
    nat: str
    page_size: int
    create_users: bool
    options: ImportOptions
    pages: list[list]  # type: ignore[type-arg]  # [page, [[number, offset, size], ...]]
    trace: NotRequired[dict[str, str]]  # the job span's context, for the chunks' spans


class RunRefused(TypedDict):
    refused: str


class ChunkSpec(TypedDict):
    number: int
    page: int
    offset: int
    size: int


class ChunkResult(TypedDict):
    status: str
    imported: int
    invalid: int
    error: NotRequired[str]


class RunSummary(TypedDict):
    job_id: int
    status: str
    imported: int
    invalid: int
    chunks_done: int
    chunks_failed: int
    chunks_total: int


class Recorded(TypedDict):
    """What a started run answers the page or the CLI with."""

    job_id: int
    run: int
