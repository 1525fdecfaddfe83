"""Running alembic from the app (`webapp migrate`, the tests, `make run`), and the rules
for what alembic may touch: our tables, never DBOS's `dbos` schema or its checkpoint table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from webapp.core import models
from webapp.core.db import create_db_engine, ensure_sqlite_directory

ROOT = Path(__file__).resolve().parents[2]
DBOS_OWNED_TABLES = {"datasource_outputs", "dbos_datasource_migrations", "dbos_migrations"}


def include_object(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
    if type_ == "table" and (name in DBOS_OWNED_TABLES or getattr(obj, "schema", None) == "dbos"):
        return False
    return True


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "schema":
        return name in (None, "public")
    if type_ == "table":
        return name not in DBOS_OWNED_TABLES
    return True


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write our UTC column type as the plain DateTime it stores, so migrations never
    import app code that may change after they are written."""
    if type_ == "type" and isinstance(obj, models.UTCDateTime):
        return "sa.DateTime(timezone=True)"
    return False


def comparison_options() -> dict[str, Any]:
    return {"include_object": include_object, "include_name": include_name, "compare_type": True}


def alembic_config(database_url: str) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    ensure_sqlite_directory(database_url)
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def schema_drift(database_url: str) -> list[Any]:
    """What autogenerate would change: empty when the models match the migrated database."""
    engine = create_db_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts=comparison_options())
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


