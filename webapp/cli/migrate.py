"""`webapp migrate`: bring the app database to the latest schema."""

from __future__ import annotations

import argparse

from sqlalchemy.engine import make_url

from webapp.config import Settings
from webapp.core.migrate import upgrade


def migrate(settings: Settings, args: argparse.Namespace) -> int:
    upgrade(settings.database_url)
    print(f"database is at the latest schema ({redact(settings.database_url)})")
    return 0


def redact(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def add_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    commands.add_parser("migrate", help="bring the database to the latest schema").set_defaults(run=migrate)
