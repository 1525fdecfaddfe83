"""`webapp import-users`: run an import in this process, with a progress bar.

The command launches DBOS itself, listening only to the `import` queue, under its own
executor id (`<EXECUTOR_ID>-import-cli`): it never picks up the server's workflows, and a
CLI killed mid-import is recovered by the next `webapp import-users` on this machine,
which attaches to the unfinished job (same source, count, seed and chunk size) instead
of starting another. `--resume JOB` finishes a cancelled or failed job.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import IO

from webapp import workflows
from webapp.cli.leaving import leave
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.errors import Refusal
from webapp.core.logging_setup import configure_logging
from webapp.core.models import ImportStatus, utcnow
from webapp.services.people_import import jobs, tracing
from webapp.services.people_import.orders import ImportOrder, NewJob, NewRun
from webapp.services.people_import.reach import fetch_policy
from webapp.services.people_import.source import PageCache
from webapp.workflows import imports as imports_workflow

EXECUTOR_SUFFIX = "-import-cli"
REFRESH_SECONDS = 0.25
PLAIN_EVERY_SECONDS = 2.0
STALL_SECONDS = 10.0  # no progress for this long: the progress line says where the job waits
FINISHED = 0
NOT_FINISHED = 1
TIMED_OUT = 3


class CommandError(Exception):
    """The import cannot start; the message is one line for the operator."""


def cli_settings(settings: Settings) -> Settings:
    """Its own executor id; DBOS's start-up chatter hidden unless LOG_LEVEL asks for more."""
    quieter = "WARNING" if settings.log_level.upper() == "INFO" else settings.log_level
    return settings.model_copy(update={"executor_id": settings.executor_id + EXECUTOR_SUFFIX, "log_level": quieter})


def start_workflows(settings: Settings, database: Database) -> None:
    """DBOS for this command: it dequeues import chunks only, never the server's work."""
    workflows.start(settings, database, queues=[imports_workflow.QUEUE])
    workflows.register(settings, only=[imports_workflow.QUEUE])


def _start(order: ImportOrder, workflow_id: str) -> int:
    try:
        return int(imports_workflow.start_run(order, workflow_id, timeout_seconds=30)["job_id"])
    except Refusal as refused:
        raise CommandError(str(refused)) from None


def begin(settings: Settings, database: Database, *, source: str | None, count: int, seed: str, chunk_size: int,
          nat: str, create_users: bool, resume: int | None, out: IO[str]) -> int:
    """Start, attach to, or resume a job; returns its id."""
    actor = "cli"
    options = imports_workflow.import_options(settings)
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
        order = NewRun(job_id=resume, run=run, mode="resume", chunk=None, actor=actor, actor_id=None, options=options)
        job_id = _start(order, imports_workflow.run_workflow_id(resume, run, uuid.uuid4().hex[:12]))
        print(f"import {job_id} resumed (run {run})", file=out)
        return job_id
    if not source:
        raise CommandError("--source is required (an API address or a JSON file)")
    try:
        spec = jobs.job_spec(source_text=source, count=count, seed=seed, chunk_size=chunk_size, nat=nat.upper(),
                             create_users=create_users, files_dir=None, preferred_page_size=settings.import_page_size,
                             policy=fetch_policy(settings))
    except jobs.ImportRefused as refused:
        raise CommandError(str(refused)) from None
    with database.session() as session:
        existing = jobs.unfinished_job(session, source=spec["source"], count=spec["count"], seed=seed,
                                       chunk_size=chunk_size, nat=spec["nat"])
    if existing is not None:
        print(f"import {existing} with these settings is unfinished; following it", file=out)
        return existing
    job_id = _start(NewJob(spec=spec, actor=actor, actor_id=None, options=options),
                    imports_workflow.start_workflow_id(uuid.uuid4().hex))
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


class Stall:
    """Notices a job that stopped moving and says, at most every few seconds, where it waits."""

    def __init__(self, cache: PageCache, *, after_seconds: float) -> None:
        self.cache, self.after_seconds = cache, after_seconds
        self.seen: tuple[int, int, tuple[tuple[str, int], ...]] | None = None
        self.moved_at = time.monotonic()
        self.asked_at = 0.0
        self.waiting: str | None = None

    def note(self, view: jobs.Progress) -> str | None:
        now = time.monotonic()
        seen = (view.imported, view.invalid, tuple(sorted(view.counts.items())))
        if seen != self.seen:
            self.seen, self.moved_at, self.asked_at, self.waiting = seen, now, 0.0, None
            return None
        if now - self.moved_at < self.after_seconds:
            return None
        if now - self.asked_at >= PLAIN_EVERY_SECONDS:
            self.asked_at = now
            self.waiting = asyncio.run(imports_workflow.waiting_on(view, self.cache, now=utcnow()))
        return self.waiting


class TimedOut(Exception):
    """--timeout passed before the job stopped running; the job itself goes on."""


def follow(database: Database, job_id: int, *, out: IO[str], interactive: bool, stall: Stall,
           deadline: float | None = None) -> jobs.Progress:
    """Draw progress until the job stops running; returns the last view. Once the job has
    not moved for a while, each line also says where it waits. TimedOut at `deadline`
    (a time.monotonic() value)."""
    last_plain, last_waiting = 0.0, None
    while True:
        with database.session() as session:
            view = jobs.progress(session, job_id, now=utcnow())
        assert view is not None
        line = progress_line(view, shutil.get_terminal_size((120, 20)).columns)
        waiting = stall.note(view) if view.active else None
        if waiting:
            line += f" · waiting: {waiting}"
        if interactive:
            out.write("\r\x1b[2K" + line)
            out.flush()
        elif time.monotonic() - last_plain >= PLAIN_EVERY_SECONDS or not view.active or waiting != last_waiting:
            print(line, file=out, flush=True)
            last_plain, last_waiting = time.monotonic(), waiting
        if not view.active:
            if interactive:
                out.write("\n")
            return view
        if deadline is not None and time.monotonic() >= deadline:
            if interactive:
                out.write("\n")
            raise TimedOut(line)
        time.sleep(REFRESH_SECONDS)


def import_users(settings: Settings, *, source: str | None, count: int, seed: str, chunk_size: int | None,
                 nat: str = "", create_users: bool = False, resume: int | None = None, quiet: bool = False,
                 timeout: float | None = None, stall_seconds: float = STALL_SECONDS, out: IO[str] | None = None) -> int:
    """The whole command; returns the exit status: 0 when the job finished, 1 when it
    stopped unfinished (failed or cancelled), 3 when `timeout` seconds passed first."""
    out = out or sys.stderr
    settings = cli_settings(settings)
    configure_logging(settings.log_level, settings.resolved_log_format)
    database = Database(settings.database_url)
    try:
        start_workflows(settings, database)
        job_id = begin(settings, database, source=source, count=count, seed=seed,
                       chunk_size=chunk_size or settings.import_chunk_size, nat=nat, create_users=create_users,
                       resume=resume, out=out)
        began = time.monotonic()
        stall = Stall(PageCache(Path(imports_workflow.import_options(settings)["cache_dir"])),
                      after_seconds=stall_seconds)
        deadline = began + timeout if timeout is not None else None
        try:
            view = follow(database, job_id, out=_Null() if quiet else out, interactive=not quiet and out.isatty(),
                          stall=stall, deadline=deadline)
        except TimedOut as stopped:
            print(f"import {job_id} still running after {timeout:g} s; stopped following it "
                  f"(last: {stopped}). Run the same command again to follow and finish it.", file=out)
            return TIMED_OUT
        job = view.job
        print(f"import {job_id} {job.status}: {view.imported:,} people imported, {view.invalid:,} bad records, "
              f"{view.counts.get('failed', 0)} failed chunks, {time.monotonic() - began:.1f} s")
        if job.status == ImportStatus.failed:
            print(f"retry the failed chunks with the admin page /admin/import/{job_id} "
                  f"or `webapp import-users --resume {job_id}`", file=out)
        return FINISHED if job.status == ImportStatus.finished else NOT_FINISHED
    finally:
        workflows.stop(grace_seconds=settings.shutdown_grace_seconds)
        tracing.shutdown()
        database.dispose()


class _Null:
    def write(self, _text: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def run_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        status = import_users(settings, source=args.source, count=args.count, seed=args.seed,
                              chunk_size=args.chunk_size, nat=args.nat, create_users=args.create_users,
                              resume=args.resume, quiet=args.quiet, timeout=args.timeout)
    except CommandError as exc:
        print(f"cannot import: {exc}", file=sys.stderr)
        status = 1
    except KeyboardInterrupt:
        print("\nstopped; run the same command again to finish the import", file=sys.stderr)
        status = 130
    leave(status)


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds < 10**7:
        raise argparse.ArgumentTypeError("give a number of seconds above 0")
    return seconds


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("import-users", help="import people from a randomuser-compatible API or file")
    command.add_argument("--source", help="API address (e.g. https://randomuser.me) or a JSON file")
    command.add_argument("--count", type=int, default=1000)
    command.add_argument("--seed", default="gatehouse")
    command.add_argument("--chunk-size", type=int, help="people per transaction (default IMPORT_CHUNK_SIZE)")
    command.add_argument("--nat", default="", help="nationalities for an API, e.g. DE,FR")
    command.add_argument("--create-users", action="store_true", help="also create a member per person")
    command.add_argument("--resume", type=int, metavar="JOB", help="finish a cancelled or failed import")
    command.add_argument("--quiet", action="store_true", help="no progress bar, only the summary")
    command.add_argument("--timeout", type=positive_seconds, metavar="SECONDS",
                         help="stop following after SECONDS (exit status 3); the import goes on when run again")
    command.set_defaults(run=run_command)
