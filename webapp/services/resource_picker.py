"""What the request form's resource picker shows of each resource: its description, who
approves it, how long a decision usually takes, and what the person already has of it
(pending, with its request; held, until when), found by a search that needs no JavaScript.

A handful of grouped queries, whatever the number of resources and requests: the typical
decision time averages the decisions of the last DECISION_WINDOW only (an index on decided_at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import AccessRequest, Grant, RequestStatus, Resource, ResourceApprover, User, utcnow

DECISION_WINDOW = timedelta(days=90)
MAX_SHOWN = 200  # a search narrows a longer catalogue


@dataclass(frozen=True)
class ResourceCard:
    id: int
    name: str
    kind: str
    description: str
    approvers: list[str]
    auto_approve: bool
    max_duration_seconds: int | None
    typical_decision_seconds: float | None  # None: no decision in the window
    pending_id: int | None  # the person's request for it that waits
    held_until: datetime | None  # the end of the grant the person holds (None: permanent, or none held)
    held_grant_id: int | None = None  # that grant: the one an extension would extend

    @property
    def held(self) -> bool:
        return self.held_grant_id is not None

    @property
    def taken(self) -> bool:
        """Already pending or held: the form refuses it (and offers the request, or to extend)."""
        return self.pending_id is not None or self.held


def _seconds_between(start: sa.ColumnElement[datetime], end: sa.ColumnElement[datetime],
                     dialect: str) -> sa.ColumnElement[float]:
    if dialect == "postgresql":
        return sa.func.extract("epoch", end - start)
    return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def resource_cards(session: Session, user_id: int, *, q: str = "") -> list[ResourceCard]:
    """The resources matching `q` (name, kind or description), by name, as the picker shows them."""
    query = sa.select(Resource).order_by(Resource.name).limit(MAX_SHOWN)
    if q:
        query = query.where(sa.or_(*(column.icontains(q, autoescape=True)  # type: ignore[attr-defined]
                                     for column in (Resource.name, Resource.kind, Resource.description))))
    resources = list(session.scalars(query))
    ids = [r.id for r in resources]
    if not ids:
        return []
    approvers: dict[int, list[str]] = {}
    for resource_id, name in session.execute(
            sa.select(ResourceApprover.resource_id, User.name).join(User, User.id == ResourceApprover.user_id)
            .where(ResourceApprover.resource_id.in_(ids), User.active).order_by(User.name)):  # type: ignore[attr-defined]
        approvers.setdefault(resource_id, []).append(name)
    dialect = session.get_bind().dialect.name
    typical = dict(session.execute(  # type: ignore[arg-type]
        sa.select(AccessRequest.resource_id,
                  sa.func.avg(_seconds_between(AccessRequest.created_at, AccessRequest.decided_at, dialect)))  # type: ignore[arg-type]
        .where(AccessRequest.resource_id.in_(ids), AccessRequest.decided_at >= utcnow() - DECISION_WINDOW,  # type: ignore[attr-defined, operator]
               AccessRequest.status.in_([RequestStatus.approved, RequestStatus.rejected, RequestStatus.revoked]))  # type: ignore[attr-defined]
        .group_by(AccessRequest.resource_id)).all())
    pending = dict(session.execute(  # type: ignore[arg-type]
        sa.select(AccessRequest.resource_id, sa.func.min(AccessRequest.id))
        .where(AccessRequest.requester_id == user_id, AccessRequest.status == RequestStatus.requested,
               AccessRequest.resource_id.in_(ids)).group_by(AccessRequest.resource_id)).all())  # type: ignore[attr-defined]
    held: dict[int, tuple[int, datetime | None]] = {}  # resource -> the grant that ends last (None: never)
    for grant_id, resource_id, expires_at in session.execute(
            sa.select(Grant.id, Grant.resource_id, Grant.expires_at)
            .where(Grant.user_id == user_id, Grant.revoked_at.is_(None), Grant.resource_id.in_(ids))):  # type: ignore[union-attr, attr-defined]
        best = held.get(resource_id)
        if best is None or (best[1] is not None and (expires_at is None or expires_at > best[1])):
            held[resource_id] = (grant_id, expires_at)
    return [ResourceCard(
        id=r.id, name=r.name, kind=r.kind, description=r.description, approvers=approvers.get(r.id, []),  # type: ignore[arg-type]
        auto_approve=r.auto_approve, max_duration_seconds=r.max_duration_seconds,
        typical_decision_seconds=float(typical[r.id]) if typical.get(r.id) is not None else None,
        pending_id=pending.get(r.id), held_until=held[r.id][1] if r.id in held else None,
        held_grant_id=held[r.id][0] if r.id in held else None,
    ) for r in resources]
