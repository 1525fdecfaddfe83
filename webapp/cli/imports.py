"""`webapp import-users`: run an import in this process, with a progress bar.

The command launches DBOS itself, listening only to the `import` queue, under its own
executor id (`<EXECUTOR_ID>-import-cli`): it never picks up the server's workflows, and a
CLI killed mid-import is recovered by the next `webapp import-users` on this machine,
which attaches to the unfinished job (same source, count, seed and chunk size) instead
of starting another. `--resume JOB` finishes a cancelled or failed job.
"""

from __future__ import annotations

import shutil
import sys
import time
import uuid
from typing import IO, Any

from dbos import DBOS, SetWorkflowID

from webapp.workflows import runtime
from webapp.config import Settings
from webapp.core.db import Database, datasource, ensure_sqlite_directory
from webapp.core.logging_setup import configure_logging
from webapp.core.models import ImportStatus, utcnow
from webapp.services.people_import import jobs, tracing
from webapp.workflows.imports import (
    QUEUE,
    RECORDED_EVENT,
    import_options,
    import_run_workflow,
    run_workflow_id,
    start_workflow_id,
)
from webapp.workflows.notifications import configure_channels

EXECUTOR_SUFFIX = "-import-cli"
REFRESH_SECONDS = 0.25
PLAIN_EVERY_SECONDS = 2.0
FINISHED = 0
NOT_FINISHED = 1


class CommandError(Exception):
    """The import cannot start; the message is one line for the operator."""


def cli_settings(settings: Settings) -> Settings:
    """Its own executor id; DBOS's start-up chatter hidden unless LOG_LEVEL asks for more."""
    quieter = "WARNING" if settings.log_level.upper() == "INFO" else settings.log_level
    return settings.model_copy(update={"executor_id": settings.executor_id + EXECUTOR_SUFFIX, "log_level": quieter})


def start_dbos_for_imports(settings: Settings, database: Database) -> None:
    """Like `runtime.start_dbos`, but this process dequeues import chunks only."""
    ensure_sqlite_directory(settings.system_database_url)
    if runtime.dbos_is_launched():
        DBOS.destroy()
    DBOS(config=runtime.dbos_config(settings))
    DBOS.listen_queues([QUEUE])
    datasource.bind(database)
    configure_channels(settings)
    DBOS.launch()
    DBOS.register_queue(QUEUE, worker_concurrency=settings.import_concurrency,
                        limiter={"limit": settings.import_rate_limit, "period": settings.import_rate_period},
                        polling_interval_sec=settings.queue_polling_interval, on_conflict="always_update")


def _start(order: dict[str, Any], workflow_id: str) -> int:
    with SetWorkflowID(workflow_id):
        DBOS.start_workflow(import_run_workflow, order)
    recorded = DBOS.get_event(workflow_id, RECORDED_EVENT, timeout_seconds=30)
    if recorded is None:
        raise CommandError("the import workflow did not start within 30 s")
    if "refused" in recorded:
        raise CommandError(recorded["refused"])
    return int(recorded["job_id"])


def begin(settings: Settings, database: Database, *, source: str | None, count: int, seed: str, chunk_size: int,
          nat: str, create_users: bool, resume: int | None, out: IO[str]) -> int:
    """Start, attach to, or resume a job; returns its id."""
    actor = "cli"
    options = import_options(settings)
    if resume is not None:
        with database.session() as session:
            view = jobs.progress(session, resume, now=utcnow())
            if view is None:
                raise CommandError(f"there is no import {resume}")
            if view.active:
                print(f"import {resume} is running; following it", file=out)
                return resume
            try:
                run = jobs.check_new_run(session, resume, mode="resume")
            except jobs.ImportRefused as refused:
                raise CommandError(str(refused)) from None
        order = {"job_id": resume, "run": run, "mode": "resume", "chunk": None, "actor": actor, "actor_id": None,
                 "options": options}
        job_id = _start(order, run_workflow_id(resume, run, uuid.uuid4().hex[:12]))
        print(f"import {job_id} resumed (run {run})", file=out)
        return job_id
    if not source:
        raise CommandError("--source is required (an API address or a JSON file)")
    try:
        spec = jobs.job_spec(source_text=source, count=count, seed=seed, chunk_size=chunk_size, nat=nat.upper(),
                             create_users=create_users, files_dir=None, preferred_page_size=settings.import_page_size)
    except jobs.ImportRefused as refused:
        raise CommandError(str(refused)) from None
    with database.session() as session:
        existing = jobs.unfinished_job(session, source=spec["source"], count=spec["count"], seed=seed,
                                       chunk_size=chunk_size, nat=spec["nat"])
    if existing is not None:
        print(f"import {existing} with these settings is unfinished; following it", file=out)
        return existing
    job_id = _start({"spec": spec, "actor": actor, "actor_id": None, "options": options},
                    start_workflow_id(uuid.uuid4().hex))
    print(f"import {job_id} started: {spec['count']:,} people from {spec['source']}, "
          f"chunks of {chunk_size}, pages of {spec['page_size']}", file=out)
    return job_id


def progress_line(view: jobs.Progress, width: int) -> str:
    done = view.imported + view.invalid
    bar_width = max(10, min(40, width - 90))
    filled = int(bar_width * view.done_fraction)
    counts = view.counts
    rate = f"{view.rate:,.0f}/s" if view.rate else "-/s"
    left = f"{view.eta_seconds:.0f} s left" if view.eta_seconds is not None else ""
    return (f"[{'#' * filled}{'.' * (bar_width - filled)}] {view.done_fraction * 100:3.0f}% "
            f"{done:,}/{view.job.count:,} ({view.invalid:,} bad) "
            f"chunks {counts.get('done', 0)}/{len(view.chunks)} done {counts.get('failed', 0)} failed "
            f"{rate} {left}").rstrip()


def follow(database: Database, job_id: int, *, out: IO[str], interactive: bool) -> jobs.Progress:
    """Draw progress until the job stops running; returns the last view."""
    last_plain = 0.0
    while True:
        with database.session() as session:
            view = jobs.progress(session, job_id, now=utcnow())
        assert view is not None
        line = progress_line(view, shutil.get_terminal_size((120, 20)).columns)
        if interactive:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif time.monotonic() - last_plain >= PLAIN_EVERY_SECONDS or not view.active:
            print(line, file=out, flush=True)
            last_plain = time.monotonic()
        if not view.active:
            if interactive:
                out.write("\n")
            return view
        time.sleep(REFRESH_SECONDS)


def import_users(settings: Settings, *, source: str | None, count: int, seed: str, chunk_size: int | None,
                 nat: str = "", create_users: bool = False, resume: int | None = None, quiet: bool = False,
                 out: IO[str] | None = None) -> int:
    """The whole command; returns the exit status (0 when the job finished)."""
    out = out or sys.stderr
    settings = cli_settings(settings)
    configure_logging(settings.log_level, settings.resolved_log_format)
    database = Database(settings.database_url)
    try:
        start_dbos_for_imports(settings, database)
        job_id = begin(settings, database, source=source, count=count, seed=seed,
                       chunk_size=chunk_size or settings.import_chunk_size, nat=nat, create_users=create_users,
                       resume=resume, out=out)
        began = time.monotonic()
        if quiet:
            view = follow(database, job_id, out=_Null(), interactive=False)
        else:
            view = follow(database, job_id, out=out, interactive=out.isatty())
        job = view.job
        print(f"import {job_id} {job.status}: {view.imported:,} people imported, {view.invalid:,} bad records, "
              f"{view.counts.get('failed', 0)} failed chunks, {time.monotonic() - began:.1f} s")
        if job.status == ImportStatus.failed:
            print(f"retry the failed chunks with the admin page /admin/import/{job_id} "
                  f"or `webapp import-users --resume {job_id}`", file=out)
        return FINISHED if job.status == ImportStatus.finished else NOT_FINISHED
    finally:
        runtime.stop_dbos(grace_seconds=settings.shutdown_grace_seconds)
        tracing.shutdown()
        database.dispose()


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
