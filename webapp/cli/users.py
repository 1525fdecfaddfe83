"""`webapp create-user`: add a person who can sign in (or, without a password, be granted access)."""

from __future__ import annotations

import argparse
import getpass
import sys

from webapp.config import Settings
from webapp.core.db import Database
from webapp.services.accounts import AccountError, create_user


def add_user(settings: Settings, args: argparse.Namespace) -> int:
    password = args.password
    if password is None and not (args.no_password or args.service):
        password = getpass.getpass("Password: ")
    database = Database(settings.database_url)
    try:
        with database.session() as session:
            user = create_user(
                session, email=args.email, name=args.name, password=password, role=args.role,
                department=args.department, title=args.title, actor="cli", service=args.service,
            )
            kind = "service account" if user.is_service else user.role
            print(f"created {kind} {user.email} (id {user.id})")
    except AccountError as exc:
        print(f"cannot create user: {exc}", file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("create-user", help="add a person who can sign in")
    command.add_argument("--email", required=True)
    command.add_argument("--name", required=True)
    command.add_argument("--role", default="member", choices=["member", "approver", "admin"])
    command.add_argument("--department", default="")
    command.add_argument("--title", default="")
    command.add_argument("--password", help="omit to be asked (safer than the command line)")
    command.add_argument("--no-password", action="store_true", help="a person who cannot sign in yet")
    command.add_argument("--service", action="store_true",
                         help="an account for scripts: no password; an admin issues its tokens on its page")
    command.set_defaults(run=add_user)
