"""Where the request form starts: empty, with a resource chosen (a suggestion's link), as an
extension of a grant the person holds (My access: "Extend"), or as a copy of an earlier request
(My requests: "Request again"). What the person has of each resource, the picker says
(webapp.services.resource_picker).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from webapp.core.durations import DURATIONS, duration_key
from webapp.core.models import AccessRequest, Grant, Resource
from webapp.services.extensions import extendable


@dataclass(frozen=True)
class Extending:
    """The grant an extension form extends."""

    grant_id: int
    resource_id: int
    resource: str
    expires_at: datetime


@dataclass(frozen=True)
class Prefill:
    values: dict[str, Any] = field(default_factory=dict)
    extending: Extending | None = None


def prefill(session: Session, user_id: int, *, resource_id: int | None = None, extend: int | None = None,
            again: int | None = None) -> Prefill:
    """The form's first values. Someone else's grant or request fills in nothing."""
    if extend is not None:
        grant = session.get(Grant, extend)
        if grant is not None and extendable(grant, user_id, grant.resource_id):
            resource = session.get(Resource, grant.resource_id)
            assert resource is not None and grant.id is not None and grant.expires_at is not None
            return Prefill({"resource_id": resource.id, "extends_grant_id": grant.id, "duration": "8h"},
                           Extending(grant.id, resource.id, resource.name, grant.expires_at))  # type: ignore[arg-type]
    if again is not None:
        earlier = session.get(AccessRequest, again)
        if earlier is not None and earlier.requester_id == user_id:
            key = duration_key(earlier.duration_seconds) if earlier.duration_seconds in DURATIONS.values() else "8h"
            return Prefill({"resource_id": earlier.resource_id, "duration": key, "reason": earlier.reason})
    return Prefill({"resource_id": resource_id or "", "duration": "8h"})
