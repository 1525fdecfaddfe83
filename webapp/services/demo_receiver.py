"""The demo's webhook receiver: what seed-demo's webhook agent reaches, inside the app, so a
newcomer sees a signed webhook carry grants and revocations after `make run` with no set-up.

Each delivery it accepts becomes an outbox entry (channel "webhook"), keyed by the request's
Idempotency-Key: a retried delivery is answered 409 ("already so"), as the agent expects of a
real receiver. Its signing secret is derived from SECRET_KEY and handed to this process's
agents under DEMO_SECRET_ENV (an agent reads secrets only from GATEHOUSE_AGENT_* variables).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import Grant, Notification, NotificationStatus, utcnow

DEMO_SECRET_ENV = "GATEHOUSE_AGENT_DEMO_WEBHOOK_SECRET"
PATH = "/hooks/demo"
CHANNEL = "webhook"


def demo_secret(secret_key: str) -> str:
    """The receiver's signing secret: stable for one SECRET_KEY, useless without it."""
    return hmac.new(secret_key.encode(), b"gatehouse demo webhook receiver", hashlib.sha256).hexdigest()


def record_delivery(session: Session, payload: dict[str, Any], key: str) -> bool:
    """Keep one delivery in the outbox; False when this key was delivered before."""
    dedup = f"{CHANNEL}:{key}"[:300]
    if session.scalar(sa.select(Notification.id).where(Notification.dedup_key == dedup)) is not None:
        return False
    person = payload.get("person") or {}
    grant_id = payload.get("grant_id")
    request_id = session.scalar(sa.select(Grant.request_id).where(Grant.id == grant_id)) if isinstance(
        grant_id, int) else None
    verb = "Grant" if payload.get("action") == "grant" else "Revoke"
    now = utcnow()
    session.add(Notification(
        channel=CHANNEL, recipient="demo receiver", status=NotificationStatus.sent, dedup_key=dedup,
        subject=f"{verb}: {person.get('email', '?')} in {payload.get('target') or payload.get('resource') or '?'}"[:300],
        body=json.dumps(payload, indent=2, sort_keys=True)[:10000], request_id=request_id, attempts=1,
        created_at=now, sent_at=now))
    session.flush()
    return True
