"""The dashboard's counters, scoped like the requests table: each person counts what they
may see (admins everything), so a counter never hints at rows its reader cannot open."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import AccessRequest, ErrorRecord, Grant, RequestStatus
from webapp.services.access import Viewer, visible_to
from webapp.services.drift import uncorrected_total

SOON = timedelta(hours=24)
ERROR_WINDOW = timedelta(hours=24)
# An approved request stays approved until its grant ends, then becomes revoked.
WAS_APPROVED = (RequestStatus.approved, RequestStatus.revoked)


@dataclass(frozen=True)
class Counters:
    pending: int
    approved_today: int  # since midnight UTC
    expiring_soon: int  # active grants that end within SOON
    errors: int  # error records within ERROR_WINDOW (for non-admins: of requests they can see)
    drift: int  # admins: differences between targets and grants still standing (others: 0)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def _count(session: Session, model: type, *where: object) -> int:
    return session.scalar(sa.select(sa.func.count()).select_from(model).where(*where)) or 0  # type: ignore[arg-type]


def load_counters(session: Session, viewer: Viewer, *, now: datetime) -> Counters:
    midnight = datetime.combine(now.date(), time(), tzinfo=now.tzinfo)
    visible = visible_to(viewer)
    errors_seen = sa.true() if viewer.principal.is_admin else ErrorRecord.request_id.in_(  # type: ignore[union-attr]
        sa.select(AccessRequest.id).where(visible))
    return Counters(
        pending=_count(session, AccessRequest, visible, AccessRequest.status == RequestStatus.requested),
        approved_today=_count(session, AccessRequest, visible, AccessRequest.decided_at >= midnight,  # type: ignore[operator]
                              AccessRequest.status.in_(WAS_APPROVED)),  # type: ignore[attr-defined]
        expiring_soon=_count(session, Grant, visible_to(viewer, Grant.user_id, Grant.resource_id),
                             Grant.revoked_at.is_(None), Grant.expires_at > now,  # type: ignore[union-attr, operator]
                             Grant.expires_at <= now + SOON),  # type: ignore[operator]
        errors=_count(session, ErrorRecord, errors_seen, ErrorRecord.at >= now - ERROR_WINDOW),
        drift=uncorrected_total(session) if viewer.principal.is_admin else 0,
    )
