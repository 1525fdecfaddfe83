"""Migrations: up to head on an empty database, back down to nothing, and no drift."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel

from webapp.core.migrate import downgrade, schema_drift, upgrade

APP_TABLES = {t.name for t in SQLModel.metadata.sorted_tables}


@pytest.fixture
def empty_database_url(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        yield f"sqlite:///{tmp_path / 'empty.sqlite'}"
        return
    name = f"gatehouse_mig_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _tables(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_creates_every_table_and_downgrade_removes_them(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert APP_TABLES <= _tables(empty_database_url)
    downgrade(empty_database_url, "base")
    assert _tables(empty_database_url) & APP_TABLES == set()
    upgrade(empty_database_url)  # and up again: downgrade left nothing behind
    assert APP_TABLES <= _tables(empty_database_url)


def test_models_and_migrations_do_not_drift(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    assert schema_drift(empty_database_url) == []


def test_drift_check_notices_a_missing_column(empty_database_url: str) -> None:
    upgrade(empty_database_url)
    engine = sa.create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE notifications DROP COLUMN last_error"))
    finally:
        engine.dispose()
    assert [diff[0] for diff in schema_drift(empty_database_url)] == ["add_column"]
