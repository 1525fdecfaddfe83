"""Grants in force: which grants give access at a moment, what a person holds now, and the
announcement of grants entering their last day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import AuditEvent, Grant, Resource, User
from webapp.services.audit import Action, record_event

ANNOUNCE_LOCK = 0x6774_6578  # pg_advisory_xact_lock key for announce_expiring ("gtex")
EXPIRING_WINDOW = timedelta(hours=24)  # the dashboard's "expiring soon" (webapp.services.overview.SOON)


@dataclass(frozen=True)
class AccessRow:
    grant_id: int
    request_id: int | None
    resource: str
    kind: str
    granted_at: datetime
    expires_at: datetime | None  # None: permanent


def grant_active(now: datetime, grant: Any = Grant) -> sa.ColumnElement[bool]:
    """`grant` (the Grant table or an alias of it) gives access at `now`: not revoked, not expired."""
    return sa.and_(grant.revoked_at.is_(None), sa.or_(grant.expires_at.is_(None), grant.expires_at > now))


def my_access(session: Session, user_id: int, *, now: datetime) -> list[AccessRow]:
    """What `user_id` holds at `now`, by resource name."""
    rows = session.execute(
        sa.select(Grant.id, Grant.request_id, Resource.name, Resource.kind, Grant.granted_at, Grant.expires_at)
        .join(Resource, Resource.id == Grant.resource_id)
        .where(Grant.user_id == user_id, grant_active(now))
        .order_by(Resource.name)
    ).all()
    return [AccessRow(*row) for row in rows]


def announce_expiring(session: Session, moment: datetime, *, settled: timedelta, limit: int) -> int:
    """One `grant.expiring` audit event per active grant that ends within EXPIRING_WINDOW of
    `moment`, was granted more than `settled` ago and has not been announced yet. Grants that
    were shorter than the window to begin with are not announced: they were "ending soon"
    from the start (and the request's workflow sends its own reminder before the end).

    Two sweeps may overlap (a slow tick, a second process): on PostgreSQL they take turns on a
    transaction lock, and the second one's query, a new statement, sees what the first wrote,
    so a grant is announced once. On SQLite a read takes no write lock, so two overlapping
    ticks of the one process can still both look before either writes; running the sweep's
    schedule on a queue of concurrency 1 would close that too (not done yet)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ANNOUNCE_LOCK})
    announced = sa.select(AuditEvent.id).where(
        AuditEvent.action == Action.GRANT_EXPIRING,
        AuditEvent.subject == sa.literal("grant:", sa.String) + sa.cast(Grant.id, sa.String))
    grants = session.execute(
        sa.select(Grant.id, Grant.granted_at, Grant.expires_at, Grant.user_id)
        .where(Grant.revoked_at.is_(None), Grant.expires_at > moment,  # type: ignore[union-attr, operator]
               Grant.expires_at <= moment + EXPIRING_WINDOW,  # type: ignore[operator]
               Grant.granted_at < moment - settled, ~announced.exists())  # type: ignore[operator]
        .order_by(Grant.expires_at).limit(limit)
    ).all()
    long_ones = [g for g in grants if g.expires_at - g.granted_at > EXPIRING_WINDOW]
    for grant_id, _granted_at, expires_at, user_id in long_ones:
        record_event(session, actor="sweep", action=Action.GRANT_EXPIRING, subject=f"grant:{grant_id}",
                     details={"expires_at": expires_at.isoformat(), "user_id": user_id})
    return len(long_ones)


def held_by_inactive(session: Session, *, limit: int) -> list[int]:
    """Grants not yet ended whose holder was deactivated: the sweep ends them through their agents."""
    return list(session.scalars(
        sa.select(Grant.id).join(User, User.id == Grant.user_id)
        .where(Grant.revoked_at.is_(None), ~User.active).order_by(Grant.id).limit(limit)))  # type: ignore[union-attr]
