"""Who a batch asks access for: the submissions an operator batch will enqueue.

Both plans skip what the request workflow would refuse anyway (a second pending request
for the same resource, a duration above the resource's maximum), so an operator sees the
real count before anything starts.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.config import Settings
from webapp.core.durations import DURATIONS, allowed, describe
from webapp.core.errors import Refusal
from webapp.core.models import AccessRequest, RequestStatus, Resource, User
from webapp.services.access import submission

LOAD_DURATION = "1h"


class PlanRefused(Refusal):
    """The batch cannot be planned; the message says why (shown to the operator)."""


def _pending_pairs(session: Session) -> Any:
    return sa.select(AccessRequest.requester_id, AccessRequest.resource_id).where(
        AccessRequest.status == RequestStatus.requested)


def for_people(session: Session, settings: Settings, *, resource_id: int, department: str, duration: str,
               reason: str) -> list[dict[str, Any]]:
    """One submission per active person in `department` ("" for everyone) without a pending
    request for the resource."""
    resource = session.get(Resource, resource_id)
    if resource is None:
        raise PlanRefused("Choose a resource from the list.")
    seconds = DURATIONS[duration]
    if not allowed(seconds, resource.max_duration_seconds):
        raise PlanRefused(f"{resource.name} grants at most {describe(resource.max_duration_seconds)}.")
    pending = _pending_pairs(session).where(AccessRequest.resource_id == resource_id).subquery()
    people = sa.select(User.id).where(User.active, User.id.not_in(sa.select(pending.c.requester_id)))  # type: ignore[union-attr]
    if department:
        people = people.where(User.department == department)
    ids = list(session.scalars(people.order_by(User.id).limit(settings.batch_max_count + 1)))
    if not ids:
        raise PlanRefused("Nobody in that set can take a new request for this resource (everyone has one pending).")
    if len(ids) > settings.batch_max_count:
        raise PlanRefused(f"That is more than {settings.batch_max_count:,} people; choose a department.")
    return [submission(settings, user_id, resource_id, seconds, reason) for user_id in ids]


def for_load(session: Session, settings: Settings, *, count: int, reason: str) -> list[dict[str, Any]]:
    """`count` submissions over (active person, resource) pairs that can take a new request,
    in a stable order, for one hour each (where the resource allows an hour)."""
    seconds = DURATIONS[LOAD_DURATION]
    pending = _pending_pairs(session).subquery()
    pairs = (
        sa.select(User.id, Resource.id.label("resource_id"))  # type: ignore[union-attr]
        .join(Resource, sa.true())
        .outerjoin(pending, sa.and_(pending.c.requester_id == User.id, pending.c.resource_id == Resource.id))
        .where(User.active, pending.c.requester_id.is_(None),
               sa.or_(Resource.max_duration_seconds.is_(None), Resource.max_duration_seconds >= seconds))  # type: ignore[union-attr,operator]
        .order_by(Resource.id, User.id)
        .limit(count)
    )
    found = session.execute(pairs).all()
    if len(found) < count:
        raise PlanRefused(f"Only {len(found):,} person and resource pairs can take a new request now; "
                          f"ask for at most that many.")
    return [submission(settings, user_id, resource_id, seconds, reason) for user_id, resource_id in found]


def departments(session: Session) -> list[str]:
    return list(session.scalars(sa.select(User.department).where(User.active, User.department != "")
                                .distinct().order_by(User.department)))
