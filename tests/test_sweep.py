"""The sweep schedule: pending requests past their TTL with no workflow waiting expire, with
an audit event; a request whose workflow still waits is left to it."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS
from starlette.testclient import TestClient

from support.access import REASON, make_resource, status_of, submit
from support.waiting import wait_for
from support.web import sign_in
from webapp.app import create_app
from webapp.core.db import Database
from webapp.core.models import AccessRequest, AuditEvent, Grant, utcnow
from webapp.services.grants import announce_expiring
from webapp.workflows.sweep import schedule


def test_schedule_is_every_n_seconds() -> None:
    assert schedule(5) == "*/5 * * * * *"


def test_orphaned_requests_expire_and_waiting_ones_are_left(settings, database: Database,  # type: ignore[no-untyped-def]
                                                             people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people)
    long_ago = utcnow() - timedelta(hours=1)
    with database.session() as session:
        orphan = AccessRequest(requester_id=people["member"].id, resource_id=resource_id, reason=REASON,
                               workflow_id="gone-workflow", created_at=long_ago, pending_until=long_ago)
        fresh = AccessRequest(requester_id=people["admin"].id, resource_id=resource_id, reason=REASON,
                              workflow_id="gone-too", pending_until=utcnow() + timedelta(hours=1))
        session.add_all([orphan, fresh])
        session.flush()
        orphan_id, fresh_id = orphan.id, fresh.id

    with TestClient(create_app(settings.model_copy(update={"sweep_interval_seconds": 1}))) as client:
        sign_in(client, people["member"].email)
        # A real request whose workflow waits in DBOS.recv, made overdue behind its back.
        waiting_id = submit(client, make_resource(database, people, "wiki"))
        with database.session() as session:
            session.execute(sa.update(AccessRequest).where(AccessRequest.id == waiting_id)
                            .values(pending_until=long_ago))

        wait_for(lambda: status_of(database, orphan_id) == "expired", timeout=20, what="the sweep")
        ticks = wait_for(lambda: [w for w in DBOS.list_workflows(schedule_name="sweep", status="SUCCESS")
                                  if (w.output or {}).get("overdue") == 1] or None, timeout=10,
                         what="a tick that saw only the waiting request")
        assert ticks
        time.sleep(0.2)
        assert status_of(database, waiting_id) == "requested", "its own workflow expires it, not the sweep"
        assert status_of(database, fresh_id) == "requested"

    with database.session() as session:
        events = session.execute(sa.select(AuditEvent.actor, AuditEvent.action)
                                 .where(AuditEvent.subject == f"request:{orphan_id}")).all()
    assert [tuple(e) for e in events] == [("sweep", "request.expired")], "expired once, audited once"


def test_two_overlapping_sweeps_announce_a_grant_once(on_postgres: bool, database: Database,
                                                      people: dict[str, Any]) -> None:
    """The first sweep has not committed when the second looks: the second waits for it, then
    sees its announcement (without the wait, both saw none and both announced)."""
    if not on_postgres:
        pytest.skip("SQLite has one writer at a time: two sweeps cannot overlap there")
    resource_id = make_resource(database, people)
    now = utcnow()
    with database.session() as session:
        session.add(Grant(user_id=people["member"].id, resource_id=resource_id, granted_at=now - timedelta(days=7),
                          expires_at=now + timedelta(hours=2)))
    counts: list[int] = []
    with database.session() as first:
        assert announce_expiring(first, now, settled=timedelta(0), limit=10) == 1

        def second_sweep() -> None:
            with database.session() as second:
                counts.append(announce_expiring(second, now, settled=timedelta(0), limit=10))

        overlapping = threading.Thread(target=second_sweep)
        overlapping.start()
        overlapping.join(timeout=1.0)
        assert overlapping.is_alive(), "the second sweep waits while the first has not committed"
    overlapping.join(timeout=10)
    assert counts == [0]
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action == "grant.expiring")) == 1


def test_grants_about_to_end_are_announced_once(settings, database: Database,  # type: ignore[no-untyped-def]
                                                people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people)
    now = utcnow()
    week_ago = now - timedelta(days=7)
    with database.session() as session:
        grants = [Grant(user_id=people["member"].id, resource_id=resource_id, granted_at=week_ago, expires_at=now + ends)
                  for ends in (timedelta(hours=2), timedelta(hours=48), timedelta(hours=-1))]
        # An 8-hour grant given an hour ago has always been "ending within a day": no announcement.
        short = Grant(user_id=people["member"].id, resource_id=resource_id, granted_at=now - timedelta(hours=1),
                      expires_at=now + timedelta(hours=7))
        revoked = Grant(user_id=people["member"].id, resource_id=resource_id, expires_at=now + timedelta(hours=1),
                        revoked_at=now)
        session.add_all([*grants, short, revoked])
        session.flush()
        soon_id = grants[0].id

    def announced() -> list[str]:
        with database.session() as session:
            return list(session.scalars(sa.select(AuditEvent.subject).where(AuditEvent.action == "grant.expiring")))

    with TestClient(create_app(settings.model_copy(update={"sweep_interval_seconds": 1}))):
        wait_for(announced, timeout=20, what="the announcement")
        wait_for(lambda: len(DBOS.list_workflows(schedule_name="sweep", status="SUCCESS")) >= 3, timeout=20,
                 what="two more ticks")
    assert announced() == [f"grant:{soon_id}"], "only the long active grant now ending within a day, once"
