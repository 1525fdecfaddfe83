"""The DBOS datasource over the app's tables: how workflows write.

Workflows write through `datasource.transaction()`, whose output DBOS records in the same
database transaction, so a replayed workflow never writes twice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from dbos import SQLAlchemyDatasource
from sqlalchemy.orm import Session

from webapp.core.db import Database
from webapp.workflows import runtime

P = ParamSpec("P")
R = TypeVar("R")


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
            runtime.forget_datasource(self._bound)
        self._bound = None

    @property
    def bound(self) -> SQLAlchemyDatasource:
        if self._bound is None:
            raise RuntimeError("the datasource is used before create_app() started the app")
        return self._bound

    def transaction(
        self, *, name: str | None = None, isolation_level: str | None = None
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """A DBOS datasource transaction, recorded under `name` (default: the function's).

        On PostgreSQL it runs READ COMMITTED unless `isolation_level` says otherwise, rather
        than DBOS's SERIALIZABLE default: our invariants hold through row locks
        (`with_for_update`) and unique constraints, and serializable retries cost more than
        they protected (bench/request_throughput.py). SQLite has one writer at a time anyway."""

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(func)
            def run(*args: P.args, **kwargs: P.kwargs) -> R:
                bound = self.bound
                level = isolation_level or ("SERIALIZABLE" if bound.engine.dialect.name == "sqlite" else "READ COMMITTED")
                options: Any = {"name": name or func.__qualname__, "isolation_level": level}
                return bound.run_tx_step(options, func, *args, **kwargs)

            return run

        return decorate

    def session(self) -> Session:
        """The session of the datasource transaction that is running now."""
        return self.bound.sql_session()


datasource = AppDatasource()
