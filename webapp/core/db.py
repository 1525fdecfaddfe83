"""Engines, sessions and the DBOS datasource for the app's tables.

Workflows write through `datasource.transaction()`, whose output DBOS records in the same
database transaction, so a replayed workflow never writes twice. The web layer reads and
writes through `Database.session()`. Both use one engine per process.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from dbos import SQLAlchemyDatasource
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

P = ParamSpec("P")
R = TypeVar("R")


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

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


class AppDatasource:
    """A stand-in for DBOS's datasource that exists at import time.

    Workflow modules decorate their transactions with it when imported; the real
    `SQLAlchemyDatasource` is bound at start-up, once the database URL is known.
    """

    def __init__(self) -> None:
        self._bound: SQLAlchemyDatasource | None = None

    def bind(self, database: Database) -> None:
        self._bound = SQLAlchemyDatasource.create(database.url, engine=database.engine)

    def unbind(self) -> None:
        """Forget the bound datasource, also in DBOS's registry, so a restart binds afresh."""
        if self._bound is not None:
            from dbos._dbos import _get_or_create_dbos_registry

            registered = _get_or_create_dbos_registry().datasources
            if self._bound in registered:
                registered.remove(self._bound)
        self._bound = None

    @property
    def bound(self) -> SQLAlchemyDatasource:
        if self._bound is None:
            raise RuntimeError("the datasource is used before create_app() started the app")
        return self._bound

    def transaction(
        self, *, isolation_level: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A DBOS datasource transaction. On PostgreSQL it runs READ COMMITTED rather than
        DBOS's SERIALIZABLE default: our invariants hold through row locks
        (`with_for_update`) and unique constraints, and serializable retries cost more than
        they protected (bench/request_throughput.py). SQLite has one writer at a time anyway."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                bound = self.bound
                level = isolation_level or ("SERIALIZABLE" if bound.engine.dialect.name == "sqlite" else "READ COMMITTED")
                options: Any = {"name": func.__qualname__, "isolation_level": level}
                return bound.run_tx_step(options, func, *args, **kwargs)

            return run

        return decorate

    def session(self) -> Session:
        """The session of the datasource transaction that is running now."""
        return self.bound.sql_session()


datasource = AppDatasource()
