"""The demo's webhook receiver (/hooks/demo): signed deliveries land in the outbox once; an
unsigned, stale or altered one is refused and changes nothing."""

from __future__ import annotations

import json
import time

import sqlalchemy as sa
from starlette.testclient import TestClient

from webapp.agents.webhook import signature
from webapp.core.db import Database
from webapp.core.models import Notification
from webapp.services.demo_receiver import demo_secret


def post(client: TestClient, payload: dict, *, key: str = "grant-1-add", secret: str | None = None,  # type: ignore[type-arg]
         timestamp: int | None = None, tamper: bool = False):  # type: ignore[no-untyped-def]
    body = json.dumps(payload).encode()
    stamp = str(timestamp or int(time.time()))
    signed = signature(secret or demo_secret(client.app.state.settings.session_secret), stamp, body)  # type: ignore[attr-defined]
    return client.post("/hooks/demo", content=body + (b" " if tamper else b""), headers={
        "Content-Type": "application/json", "X-Gatehouse-Timestamp": stamp, "X-Gatehouse-Signature": signed,
        "Idempotency-Key": key})


def outbox(database: Database) -> list[tuple[str, str]]:
    with database.session() as session:
        return [(channel, subject) for channel, subject in session.execute(
            sa.select(Notification.channel, Notification.subject))]


def test_signed_deliveries_land_once_and_anything_else_is_refused(client: TestClient, database: Database) -> None:
    payload = {"action": "grant", "person": {"email": "jamal@example.com", "name": "Jamal"}, "target": "Sales users",
               "resource": "salesforce", "grant_id": None, "ends_at": None, "key": "grant-1-add"}
    assert post(client, payload, secret="not the secret").status_code == 403
    assert post(client, payload, timestamp=int(time.time()) - 3600).status_code == 403, "a stale replay"
    assert post(client, payload, tamper=True).status_code == 403
    assert outbox(database) == [], "refusals change nothing"
    assert post(client, payload).json() == {"recorded": True}
    assert post(client, payload).status_code == 409, "a retried delivery is already so"
    assert outbox(database) == [("webhook", "Grant: jamal@example.com in Sales users")]
