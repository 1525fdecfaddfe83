"""Roles on the local PostgreSQL server (127.0.0.1:5432), made by a test and dropped after it,
for the PostgreSQL agent's tests and benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

PG_SERVER = {"host": "127.0.0.1", "port": 5432, "dbname": "postgres", "user": "postgres"}


def pg_server_up() -> bool:
    try:
        psycopg.connect(**PG_SERVER, connect_timeout=2).close()  # type: ignore[arg-type]
        return True
    except psycopg.OperationalError:
        return False


def members_of(role: str) -> set[str]:
    with psycopg.connect(**PG_SERVER) as conn:  # type: ignore[arg-type]
        rows = conn.execute("SELECT r.rolname FROM pg_roles g JOIN pg_auth_members m ON m.roleid = g.oid "
                            "JOIN pg_roles r ON r.oid = m.member WHERE g.rolname = %s", (role,)).fetchall()
    return {name for (name,) in rows}


def _run(statement: sql.Composable) -> None:
    with psycopg.connect(**PG_SERVER, autocommit=True) as conn:  # type: ignore[arg-type]
        conn.execute(statement)


def create_login(name: str) -> None:
    """A login role (kept: other tests may hold memberships through it). CI runs the SQLite and
    PostgreSQL passes side by side on one server: the other may create it at the same moment."""
    with psycopg.connect(**PG_SERVER, autocommit=True) as conn:  # type: ignore[arg-type]
        if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone():
            try:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            except (psycopg.errors.DuplicateObject, psycopg.errors.UniqueViolation):
                pass


def drop_role(name: str) -> None:
    _run(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@contextmanager
def group_role(prefix: str = "gh_group") -> Iterator[str]:
    """A fresh group role, dropped afterwards (with its memberships)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    _run(sql.SQL("CREATE ROLE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        drop_role(name)
