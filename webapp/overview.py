"""What the home page summarises: counts and the latest requests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.models import AccessRequest, Grant, RequestStatus, Resource, User


@dataclass(frozen=True)
class RecentRequest:
    id: int
    requester: str
    resource: str
    status: str
    created_at: datetime


@dataclass(frozen=True)
class Overview:
    users: int
    resources: int
    pending: int
    active_grants: int
    recent: list[RecentRequest]


def load_overview(session: Session, *, now: datetime, recent_limit: int = 10) -> Overview:
    count = lambda stmt: session.scalar(stmt) or 0  # noqa: E731
    active = sa.and_(
        Grant.revoked_at.is_(None),  # type: ignore[union-attr]
        sa.or_(Grant.expires_at.is_(None), Grant.expires_at > now),  # type: ignore[union-attr, operator]
    )
    recent_rows = session.execute(
        sa.select(AccessRequest.id, User.name, Resource.name, AccessRequest.status, AccessRequest.created_at)
        .join(User, User.id == AccessRequest.requester_id)
        .join(Resource, Resource.id == AccessRequest.resource_id)
        .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc())  # type: ignore[attr-defined, union-attr]
        .limit(recent_limit)
    ).all()
    return Overview(
        users=count(sa.select(sa.func.count()).select_from(User).where(User.active)),
        resources=count(sa.select(sa.func.count()).select_from(Resource)),
        pending=count(
            sa.select(sa.func.count())
            .select_from(AccessRequest)
            .where(AccessRequest.status == RequestStatus.requested)
        ),
        active_grants=count(sa.select(sa.func.count()).select_from(Grant).where(active)),
        recent=[RecentRequest(*row) for row in recent_rows],
    )
