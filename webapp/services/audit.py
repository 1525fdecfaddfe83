"""Writing audit events: always inside the caller's transaction, beside the change itself."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from webapp.core.models import AuditEvent, utcnow

NOTIFY_CHANNEL = "gatehouse_audit"  # webapp.live.feed listens on it


def record_event(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any] | None = None,
    actor_id: int | None = None,
) -> AuditEvent:
    event = AuditEvent(
        at=utcnow(),
        actor=actor,
        actor_id=actor_id,
        action=action,
        subject=subject,
        details=details or {},
    )
    session.add(event)
    session.flush()
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit, so the live feed wakes only for rows it can read.
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
    return event
