"""Database work from an endpoint: one session, in a worker thread (webapp.core.db)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request

T = TypeVar("T")


async def in_session(request: Request, work: Callable[[Session], T]) -> T:
    """Run `work` in a session of the app's database, off the event loop."""
    return await request.app.state.db.in_session(work)  # type: ignore[no-any-return]


def row_or_404(session: Session, model: type[T], ident: int) -> T:
    """The row of `model` with this primary key, or a 404 that names what is missing."""
    row = session.get(model, ident)
    if row is None:
        raise HTTPException(404, f"No {model.__name__.lower()} with id {ident}.")
    return row
