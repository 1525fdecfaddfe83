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


def test_tokens_made_before_expire_and_those_minted_for_someone_else_are_revoked(empty_database_url: str) -> None:
    """Issue 12, F1: the upgrade closes the hole for tokens that already exist."""
    upgrade(empty_database_url, "7c2e9d4b1a38")  # the schema before tokens were personal
    engine = sa.create_engine(empty_database_url)
    try:
        with engine.begin() as conn:
            for user_id, email in ((1, "admin@example.com"), (2, "approver@example.com")):
                conn.execute(sa.text("INSERT INTO users (id, email, name, department, title, role, active, "
                                     "created_at) VALUES (:id, :email, 'X', '', '', 'admin', true, "
                                     "CURRENT_TIMESTAMP)"), {"id": user_id, "email": email})
            for token_id, user_id, by in ((1, 1, 1), (2, 2, 1), (3, 2, None)):
                conn.execute(sa.text("INSERT INTO api_tokens (id, user_id, name, token_hash, prefix, created_at, "
                                     "created_by_id) VALUES (:id, :user, 't', :hash, 'gh_', CURRENT_TIMESTAMP, :by)"),
                             {"id": token_id, "user": user_id, "hash": f"h{token_id}", "by": by})
        upgrade(empty_database_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT id, revoked_at IS NOT NULL, expires_at, scopes FROM api_tokens "
                                        "ORDER BY id")).all()
    finally:
        engine.dispose()
    assert [(row[0], bool(row[1])) for row in rows] == [(1, False), (2, True), (3, False)], \
        "the token an admin minted for another person is revoked; their own and the CLI's stay"
    assert all(row[2] is not None and row[3] == "read,decide,operate" for row in rows)
