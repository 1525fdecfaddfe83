"""`webapp serve`: run the web app and its workflows in this process."""

from __future__ import annotations

import argparse
import logging
import os

from webapp.config import Settings
from webapp.core.logging_setup import configure_logging


def serve(settings: Settings, args: argparse.Namespace) -> int:
    import uvicorn

    from webapp.app import create_app

    configure_logging(settings.log_level, settings.resolved_log_format)
    app = create_app(settings)
    app.state.serving_pid = os.getpid()  # POST /ops/shutdown may stop this process: uvicorn handles its SIGTERM
    uvicorn.run(
        app,
        host=args.host or settings.host,
        port=args.port or settings.port,
        log_config=None,  # our handler, set up above, formats uvicorn's lines too
        access_log=args.access_log,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )
    # Workflows waiting in DBOS.recv (a grant's end, a pending decision) sit in executor
    # threads that DBOS.destroy() does not wake; the interpreter would wait for them at exit.
    # Their state is durable and this executor recovers them at its next start, so leave now.
    logging.shutdown()
    os._exit(0)


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("serve", help="run the web app and its workflows")
    command.add_argument("--host")
    command.add_argument("--port", type=int)
    command.add_argument("--access-log", action="store_true", help="log every HTTP request")
    command.set_defaults(run=serve)
