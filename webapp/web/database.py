"""Database work from an endpoint: blocking ORM calls run in the thread pool, one session each."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

T = TypeVar("T")


async def in_session(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in a session of the app's database, off the event loop."""

    def run() -> T:
        with request.app.state.db.session() as session:
            return work(session)

    return await run_in_threadpool(run)
