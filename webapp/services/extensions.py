"""Extending a grant: a new request for the same resource, linked to the grant, which on
approval moves the grant's end instead of starting a second grant (so there is no gap, and
no second membership to add and remove).

The grant's own workflow sleeps until the end; the extension tells it the new one
(webapp.workflows.access). If the grant ended before the extension was approved, the
extension becomes an ordinary grant.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import AccessRequest, Grant, utcnow
from webapp.services.audit import Action, record_event


class Extended(TypedDict):
    extended: bool  # False: the grant had ended (or is permanent): grant anew instead
    expires_at: float | None  # the grant's new end, epoch seconds
    holder: str | None  # the workflow that sleeps until the grant's end, to be told


def held_grant(session: Session, user_id: int, resource_id: int) -> Grant | None:
    """The grant `user_id` holds on `resource_id` now (the one that ends last), if any."""
    return session.scalars(
        sa.select(Grant).where(Grant.user_id == user_id, Grant.resource_id == resource_id, Grant.revoked_at.is_(None))  # type: ignore[union-attr]
        .order_by(Grant.expires_at.is_(None).desc(), Grant.expires_at.desc()).limit(1)  # type: ignore[union-attr]
    ).first()


def extendable(grant: Grant | None, user_id: int, resource_id: int) -> bool:
    """A grant the person may extend: theirs, for this resource, in force and time-bound."""
    return (grant is not None and grant.user_id == user_id and grant.resource_id == resource_id
            and grant.revoked_at is None and grant.expires_at is not None)


def extend_grant(session: Session, request_id: int, grant_id: int) -> Extended:
    """Move the grant's end by the approved request's duration, from its current end (or from
    now, had that passed): one transaction, so the grant's expiry (which re-reads the end,
    webapp.services.access_changes.end_grant) sees either the old end or the new one."""
    grant = session.get(Grant, grant_id, with_for_update=True)
    request = session.get(AccessRequest, request_id, with_for_update=True)
    assert request is not None
    if (grant is None or grant.revoked_at is not None or grant.expires_at is None
            or request.duration_seconds is None or grant.user_id != request.requester_id):
        return Extended(extended=False, expires_at=None, holder=None)
    now = utcnow()
    before = grant.expires_at
    grant.expires_at = max(before, now) + timedelta(seconds=request.duration_seconds)
    request.updated_at = now
    holder = session.scalar(sa.select(AccessRequest.workflow_id).where(AccessRequest.id == grant.request_id)) \
        if grant.request_id is not None else None
    record_event(session, actor="workflow", action=Action.GRANT_EXTENDED, subject=f"grant:{grant_id}",
                 details={"request": request_id, "grant_request": grant.request_id, "from": before.isoformat(),
                          "to": grant.expires_at.isoformat()})
    return Extended(extended=True, expires_at=grant.expires_at.timestamp(), holder=holder)


def pending_extensions(session: Session, grant_ids: list[int]) -> dict[int, int]:
    """grant id -> the id of the extension request that waits for a decision on it."""
    if not grant_ids:
        return {}
    return {grant_id: request_id for request_id, grant_id in session.execute(
        sa.select(AccessRequest.id, AccessRequest.extends_grant_id)
        .where(AccessRequest.extends_grant_id.in_(grant_ids), AccessRequest.status == "requested"))}  # type: ignore[union-attr]
