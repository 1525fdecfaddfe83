"""Alembic environment: the app's tables only (see webapp.core.migrate for what is excluded)."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

from webapp.config import Settings
from webapp.core.db import create_db_engine
from webapp.core.migrate import comparison_options, render_item


def database_url() -> str:
    return context.config.attributes.get("database_url") or Settings().database_url


def run_migrations() -> None:
    engine = create_db_engine(database_url())
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                render_item=render_item,
                **comparison_options(),
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `webapp migrate`")
run_migrations()
