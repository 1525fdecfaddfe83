"""`webapp seed-demo`: a demo organisation in an empty database: its history as rows
(webapp.services.demo), then requests in progress as live workflows (webapp.workflows.demo),
which the next `webapp serve` recovers."""

from __future__ import annotations

import argparse
import sys

from webapp.cli.leaving import leave
from webapp.cli.serve import AlreadyServed, hold_sqlite
from webapp.config import Settings
from webapp.core.db import Database
from webapp.services.demo import DEMO_PASSWORD, database_has_users, demo_logins, seed_demo


def seed(settings: Settings, args: argparse.Namespace) -> int:
    if settings.is_production and not args.force:
        print("refusing to seed demo data with ENV=production (use --force)", file=sys.stderr)
        return 2
    try:
        lock = hold_sqlite(settings.database_url)  # its live requests need DBOS, which SQLite gives one process
    except AlreadyServed as served:
        print(f"gatehouse: {served}", file=sys.stderr)
        return 2
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            seeded_before = database_has_users(session)
            if seeded_before:
                logins = demo_logins(session)
                print("the database already has users; demo data not added")
                if not logins:
                    return 0
                print(f"Demo logins (password: {DEMO_PASSWORD}):")
            else:
                logins = seed_demo(session, base_url=settings.base_url)
        if not seeded_before:
            from webapp.workflows.demo import start_live_demo  # DBOS loads only when it is needed

            live = start_live_demo(settings.model_copy(update={"log_level": "warning"}), database)
            print(f"Demo organisation created, with {live} requests in progress. "
                  f"Every demo login uses the password: {DEMO_PASSWORD}")
    finally:
        database.dispose()
        if lock is not None:
            lock.close()
    for role in ("admin", "approver", "member"):
        for login in [entry for entry in logins if entry.role == role][:3]:
            print(f"  {role:<8} {login.email:<32} {login.name}")
    if not seeded_before:
        leave(0)  # the live requests' workflows wait in threads; the server recovers them
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("seed-demo", help="create a demo organisation in an empty database")
    command.add_argument("--force", action="store_true", help="allow it with ENV=production")
    command.set_defaults(run=seed)
