"""The `webapp` command: serve, migrate, seed-demo, create-user, import-users.

Each command is a module here, and this package is the only place that wires a process
(settings, logging, DBOS). Configuration errors end the command with one line on stderr
and exit status 2.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from webapp.cli import imports, migrate, seed, serve, users
from webapp.config import ConfigError, Settings
from webapp.core import passwords

COMMANDS = (serve, migrate, seed, users, imports)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="webapp", description="Gatehouse access-request portal")
    commands = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_command(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings()
        settings.check()
        passwords.use_cost(settings.password_hashing)
        return int(args.run(settings, args))
    except ConfigError as exc:
        print(f"gatehouse: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:  # a setting of the wrong shape: name it, no traceback
        for error in exc.errors():
            where = "_".join(str(part) for part in error["loc"]).upper() or "settings"
            print(f"gatehouse: configuration error: {where}: {error['msg'].removeprefix('Value error, ')}",
                  file=sys.stderr)
        return 2
