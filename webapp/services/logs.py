"""The error log and the audit log as admins read them: filtered, newest first, paged by
id (keyset: a deep page costs what the first does), and the audit log exported whole in
batches so an export of any size runs in constant memory and in short transactions."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

import sqlalchemy as sa
from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session

from webapp.core.db import Database
from webapp.core.forms import FormModel, TimeRange
from webapp.core.models import AuditEvent, ErrorRecord

PAGE_SIZE = 50
EXPORT_BATCH = 2000
MAX_ID = 2**31 - 1  # the id columns are INTEGER: PostgreSQL refuses to compare them with more
Text = Annotated[str, StringConstraints(max_length=200)]


class ErrorQuery(FormModel):
    source: Text = ""
    before: int | None = Field(default=None, ge=1, le=MAX_ID)  # the page: ids below this one


class AuditQuery(TimeRange):
    actor: Text = ""  # contains
    action: Text = ""  # exact, or a prefix ending in "." ("request.")
    subject: Text = ""  # exact, or a prefix ending in ":" ("request:")
    before: int | None = Field(default=None, ge=1, le=MAX_ID)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    next_before: int | None  # the `before` of the next (older) page; None on the last


def _prefix_or_exact(column: Any, value: str, separator: str) -> Any:
    if value.endswith(separator):
        return column.startswith(value, autoescape=True)
    return column == value


def _newest_first(session: Session, model: Any, where: list[Any], before: int | None) -> Page:
    """One page of `model` rows matching `where`, newest first, below id `before`: LIMIT+1
    tells whether an older page exists."""
    if before:
        where = [*where, model.id < before]
    rows = list(session.scalars(sa.select(model).where(*where).order_by(model.id.desc()).limit(PAGE_SIZE + 1)))
    return Page(rows[:PAGE_SIZE], rows[PAGE_SIZE - 1].id if len(rows) > PAGE_SIZE else None)


def error_page(session: Session, query: ErrorQuery) -> Page:
    return _newest_first(session, ErrorRecord, [ErrorRecord.source == query.source] if query.source else [],
                         query.before)


def error_sources(session: Session) -> list[str]:
    return list(session.scalars(sa.select(ErrorRecord.source).distinct().order_by(ErrorRecord.source)))


def _audit_filters(query: AuditQuery) -> list[Any]:
    where: list[Any] = []
    if query.actor:
        where.append(AuditEvent.actor.icontains(query.actor, autoescape=True))  # type: ignore[attr-defined]
    if query.action:
        where.append(_prefix_or_exact(AuditEvent.action, query.action, "."))
    if query.subject:
        where.append(_prefix_or_exact(AuditEvent.subject, query.subject, ":"))
    if query.since:
        where.append(AuditEvent.at >= query.since)  # type: ignore[operator]
    if query.until:
        where.append(AuditEvent.at < query.until)  # type: ignore[operator]
    return where


def audit_page(session: Session, query: AuditQuery) -> Page:
    return _newest_first(session, AuditEvent, _audit_filters(query), query.before)


AUDIT_COLUMNS = ("id", "at", "actor", "actor_id", "channel", "token_id", "action", "subject", "details")


def audit_export(database: Database, query: AuditQuery) -> Iterator[tuple[Any, ...]]:
    """Every matching audit row, oldest first, EXPORT_BATCH at a time, each batch in its own
    short session: memory stays flat and no transaction stays open while a client reads."""
    after = 0
    columns = [getattr(AuditEvent, name) for name in AUDIT_COLUMNS]
    while True:
        with database.session() as session:
            batch = session.execute(
                sa.select(*columns).where(*_audit_filters(query), AuditEvent.id > after)  # type: ignore[operator]
                .order_by(AuditEvent.id).limit(EXPORT_BATCH)).all()  # type: ignore[arg-type]
        if not batch:
            return
        yield from (tuple(row) for row in batch)
        after = batch[-1][0]
