"""Engines and sessions for the app's tables: one engine per process.

Pages and services read and write through `Database.session()`; workflows write through
the DBOS datasource bound to the same engine (webapp.workflows.datasource).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import Session, sessionmaker

from webapp.core.background import in_thread

T = TypeVar("T")


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    """WAL lets readers run beside the one writer; IMMEDIATE takes the write lock up front
    so two writers queue on busy_timeout instead of failing on lock upgrade."""
    dbapi_conn.isolation_level = "IMMEDIATE"
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def ensure_sqlite_directory(url: str) -> None:
    if url.startswith("sqlite:///") and ":memory:" not in url:
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def create_db_engine(url: str, *, pool_size: int = 10) -> sa.Engine:
    if url.startswith("sqlite"):
        ensure_sqlite_directory(url)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        connect_args={"application_name": "gatehouse", "connect_timeout": 5},
    )


def psycopg_url(url: str) -> str:
    """The libpq form of a SQLAlchemy PostgreSQL URL, for a raw psycopg connection."""
    return sa.make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Database:
    """The app database of one process: its engine and a session factory."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = create_db_engine(url)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session that commits on success and rolls back on error."""
        with self._sessions() as session, session.begin():
            yield session

    async def in_session(self, work: Callable[[Session], T]) -> T:
        """Run `work` in a session of its own, in a worker thread: the ORM blocks, the event loop must not."""

        def run() -> T:
            with self.session() as session:
                return work(session)

        return await in_thread(run)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


# SQLite's words for "cannot be had now"; its other OperationalErrors (no such table, ...) are bugs.
_SQLITE_UNAVAILABLE = ("database is locked", "unable to open database file", "disk i/o error", "database is full")
# What a database that is down, restarting, unreachable or saturated raises, by driver.
OUTAGE_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError, psycopg.OperationalError,
    psycopg.InterfaceError, sqlite3.OperationalError,
)


def is_outage(error: BaseException) -> bool:
    """Whether `error` (or what caused it) says a database cannot be reached or used now,
    rather than that the code is wrong: the answer is then 503, not 500."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, sa_exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, sqlite3.OperationalError):
            return str(current).lower().startswith(_SQLITE_UNAVAILABLE)
        if isinstance(current, (psycopg.OperationalError, psycopg.InterfaceError, sa_exc.TimeoutError)):
            return True
        current = current.__cause__ or current.__context__
    return False
