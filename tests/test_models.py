"""The schema's own guarantees: UTC times, unique emails, monotonic audit ids."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from webapp.core.db import Database
from webapp.core.models import AuditEvent, User
from webapp.services.audit import record_event


def test_times_come_back_in_utc_whatever_zone_went_in(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    tokyo = timezone(timedelta(hours=9))
    written = datetime(2026, 11, 23, 18, 30, tzinfo=tokyo)
    with database.session() as session:
        session.add(User(email="tz@example.com", name="Tz", created_at=written))
    with database.session() as session:
        read = session.scalars(sa.select(User.created_at).where(User.email == "tz@example.com")).one()
    assert read == written
    assert read.tzinfo is not None and read.utcoffset() == timedelta(0)


def test_naive_times_are_refused(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        with database.session() as session:
            session.add(User(email="naive@example.com", name="N", created_at=datetime(2026, 1, 1)))


def test_email_is_unique(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        session.add(User(email="same@example.com", name="One"))
    with pytest.raises(sa.exc.IntegrityError):
        with database.session() as session:
            session.add(User(email="same@example.com", name="Two"))


def test_audit_ids_only_grow_even_after_deletes(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        first = record_event(session, actor="t", action="a", subject="s:1").id
        second = record_event(session, actor="t", action="a", subject="s:2").id
    with database.session() as session:
        session.execute(sa.delete(AuditEvent).where(AuditEvent.id == second))
    with database.session() as session:
        third = record_event(session, actor="t", action="a", subject="s:3")
    assert first is not None and second is not None
    assert first < second < third.id  # type: ignore[operator]
    assert third.at.tzinfo == UTC
