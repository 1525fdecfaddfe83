"""`webapp serve`: run the web app and its workflows in this process (or, with WORKERS > 1,
in that many worker processes: webapp/cli/supervisor.py).

On SQLite one process serves a database: DBOS's queues, schedules and recovery assume
that several processes share PostgreSQL. A second `webapp serve` on the same SQLite file
stops at once with one line, instead of two processes stepping on each other's work.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from webapp.cli.leaving import leave
from webapp.config import Settings
from webapp.core.logging_setup import configure_logging


class AlreadyServed(Exception):
    """Another process serves this SQLite database."""


def hold_sqlite(database_url: str) -> IO[str] | None:
    """Take the lock file next to an SQLite database for the life of this process (None
    for other databases); AlreadyServed when another process holds it."""
    if not database_url.startswith("sqlite:///"):
        return None
    path = Path(database_url.removeprefix("sqlite:///"))
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(path.name + ".serving").open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise AlreadyServed(f"{holder} already serves {path}; SQLite takes one server. Stop it first, or use "
                            "PostgreSQL (DATABASE_URL) to run several.") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"pid {os.getpid()}")
    lock.flush()
    return lock


def sqlite_refusal(settings: Settings) -> str | None:
    """Why these settings cannot run several workers, or None."""
    if settings.workers > 1 and (settings.database_url.startswith("sqlite")
                                 or settings.system_database_url.startswith("sqlite")):
        return (f"WORKERS={settings.workers} needs PostgreSQL (DATABASE_URL): SQLite takes one process. "
                "Set WORKERS=1, or move to PostgreSQL.")
    return None


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webapp.app import create_app

    refusal = sqlite_refusal(settings)
    if refusal:
        print(f"gatehouse: {refusal}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.resolved_log_format)
    if settings.workers > 1 and args.worker is None:
        from webapp.cli.supervisor import supervise

        return supervise(settings, args)
    try:
        lock = hold_sqlite(settings.database_url)
    except AlreadyServed as served:
        print(f"gatehouse: {served}", file=sys.stderr)
        return 2
    app = create_app(settings)
    app.state.serving_pid = os.getpid()  # POST /ops/shutdown may stop this process: uvicorn handles its SIGTERM
    app.state.serving_lock = lock  # held as long as the process serves
    config = uvicorn.Config(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,  # our handler, set up above, formats uvicorn's lines too
        access_log=args.access_log,
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=settings.forwarded_allow_ips or None,
        timeout_graceful_shutdown=15,
    )
    # A worker of `serve` with WORKERS > 1 listens on the socket its supervisor bound.
    sockets = [socket.socket(fileno=args.fd)] if args.fd is not None else None
    with cpu_profile(os.environ.get("GATEHOUSE_PROFILE")):
        uvicorn.Server(config).run(sockets=sockets)
    leave(0)


@contextmanager
def cpu_profile(path: str | None) -> Iterator[None]:
    """With GATEHOUSE_PROFILE=<file>, a cProfile of the event loop's thread (requests, streams,
    the live feed; not DBOS's threads), written there when the server stops: the benchmarks'
    profiles (bench/README.md) come from it."""
    if not path:
        yield
        return
    import cProfile
    import signal

    # uvicorn re-raises the SIGTERM that stopped it once it is done, which would end the
    # process before the profile is written: with this handler in place, the signal is spent.
    signal.signal(signal.SIGTERM, lambda *_: None)
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        yield
    finally:
        profiler.disable()
        profiler.dump_stats(path)


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("serve", help="run the web app and its workflows")
    command.add_argument("--host")
    command.add_argument("--port", type=int)
    command.add_argument("--access-log", action="store_true", help="log every HTTP request")
    # Set by the supervisor for its workers (WORKERS > 1), not by people.
    command.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    command.add_argument("--fd", type=int, help=argparse.SUPPRESS)
    command.set_defaults(run=serve)
