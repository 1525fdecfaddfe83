"""Access suggestions: what people like the requester hold and the requester does not.

"People like you" are the other active people in the requester's department, or with the
requester's title (an empty department or title matches nobody). A resource counts when
one of them holds it now (a grant neither revoked nor expired); resources are ranked by how
many distinct people hold them, and those the requester already holds or waits for are left
out. One SQL statement, the same on SQLite and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased

from webapp.core.models import AccessRequest, Grant, RequestStatus, Resource, User
from webapp.services.grants import grant_active

LIMIT = 5


@dataclass(frozen=True)
class Suggestion:
    resource_id: int
    name: str
    kind: str
    holders: int  # distinct people like the requester who hold it now


def suggestions_for(session: Session, user_id: int, *, now: datetime, limit: int = LIMIT) -> list[Suggestion]:
    """Up to `limit` resources held now by people like `user_id`, most holders first."""
    me, peer, mine = aliased(User), aliased(User), aliased(Grant)
    alike = sa.or_(sa.and_(me.department != "", peer.department == me.department),
                   sa.and_(me.title != "", peer.title == me.title))
    already_held = sa.exists().where(mine.user_id == me.id, mine.resource_id == Grant.resource_id, grant_active(now, mine))
    waiting = sa.exists().where(AccessRequest.requester_id == me.id, AccessRequest.resource_id == Grant.resource_id,
                                AccessRequest.status == RequestStatus.requested)
    holders = sa.func.count(sa.distinct(Grant.user_id)).label("holders")
    rows = session.execute(
        sa.select(Resource.id, Resource.name, Resource.kind, holders)
        .select_from(Grant)
        .join(peer, peer.id == Grant.user_id)
        .join(me, me.id == user_id)
        .join(Resource, Resource.id == Grant.resource_id)
        .where(peer.active, peer.id != me.id, alike, grant_active(now), ~already_held, ~waiting)
        .group_by(Resource.id, Resource.name, Resource.kind)
        .order_by(holders.desc(), Resource.name)
        .limit(limit)
    ).all()
    return [Suggestion(*row) for row in rows]
