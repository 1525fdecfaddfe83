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
            sqlite = connection.dialect.name == "sqlite"
            if sqlite:
                # Batch mode rebuilds a table (copy, drop, rename); with foreign keys on, dropping a
                # table other rows reference fails. SQLite's own procedure: keys off during the
                # change (outside any transaction), every key checked after it.
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            context.configure(
                connection=connection,
                target_metadata=SQLModel.metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                render_item=render_item,
                **comparison_options(),
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite and connection.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                    raise RuntimeError("the migration left rows whose foreign keys point nowhere; rolled back")
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `webapp migrate`")
run_migrations()
