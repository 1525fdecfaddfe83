"""The demo organisation is realistic enough to explore and consistent with itself."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import sqlalchemy as sa
from starlette.testclient import TestClient

from support.web import personal_token
from webapp.app import create_app
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    AuditEvent,
    Grant,
    Notification,
    RequestStatus,
    Resource,
    ResourceApprover,
    User,
    utcnow,
)
from webapp.core.passwords import verify_password
from webapp.services.demo import DEMO_PASSWORD, database_has_users, email_for, seed_demo
from webapp.workflows.demo import LIVE_REQUESTS, start_live_demo


def test_seed_builds_an_organisation(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        assert not database_has_users(session)
        logins = seed_demo(session)
    with database.session() as session:
        users = session.scalars(sa.select(User)).all()
        resources = session.scalars(sa.select(Resource)).all()
        approvers = session.execute(sa.select(ResourceApprover.resource_id, ResourceApprover.user_id)).all()
        requests = session.scalars(sa.select(AccessRequest)).all()
        grants = session.scalars(sa.select(Grant)).all()
        audited = set(session.scalars(sa.select(AuditEvent.subject)).all())
        assert database_has_users(session)

    assert 25 <= len(users) <= 40
    assert len({u.department for u in users}) >= 6
    assert Counter(u.role for u in users).keys() == {"admin", "approver", "member"}
    assert {(login.email, login.role) for login in logins} == {(u.email, u.role) for u in users}
    assert all(u.email.isascii() for u in users)
    assert verify_password(users[0].password_hash, DEMO_PASSWORD)

    assert 10 <= len(resources) <= 14
    assert {r.id for r in resources} == {resource_id for resource_id, _ in approvers}
    assert any(r.auto_approve for r in resources) and any(r.approvals_required > 1 for r in resources)

    # History only: nothing is left pending without a workflow to decide it.
    assert len(requests) >= 20
    assert RequestStatus.requested not in {r.status for r in requests}
    assert {RequestStatus.approved, RequestStatus.rejected}.issubset({r.status for r in requests})
    approved_ids = {r.id for r in requests if r.status in (RequestStatus.approved, RequestStatus.revoked)}
    assert {g.request_id for g in grants} == approved_ids
    assert all(f"request:{r.id}" in audited for r in requests)
    assert all(g.revoked_at is None or g.revoked_at >= g.granted_at for g in grants)


def test_seeded_history_carries_its_own_times(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, item 12: the log reads as it happened, not as one burst at seeding time, and
    the outbox shows a delivery that gave up."""
    now = utcnow()
    with database.session() as session:
        seed_demo(session, now=now)
    with database.session() as session:
        events = session.execute(sa.select(AuditEvent.id, AuditEvent.at, AuditEvent.subject, AuditEvent.action)
                                 .order_by(AuditEvent.id)).all()
        requests = {r.id: r for r in session.scalars(sa.select(AccessRequest))}
        failed = session.scalars(sa.select(Notification).where(Notification.status == "failed")).all()
    times = [at for _id, at, _subject, _action in events]
    assert times == sorted(times), "ids follow time: the log reads in order"
    assert times[0] <= now - timedelta(days=100) and max(times) <= now
    for _id, at, subject, action in events:
        if action == "request.submitted":
            assert at == requests[int(subject.split(":")[1])].created_at
    assert len(failed) == 1 and failed[0].attempts == 5 and "503" in (failed[0].last_error or "")


def test_demo_requests_in_progress_wait_for_the_demo_approvers(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    """Issue 15, item 12: after seed-demo, the demo approver has requests to decide and grants
    end within hours, each in a real workflow that the server recovers: an approval given in
    the server (after seed-demo's own process stopped) takes effect."""
    with database.session() as session:
        seed_demo(session)
    assert start_live_demo(settings, database) == len(LIVE_REQUESTS)
    with database.session() as session:
        by_email = {u.email: u for u in session.scalars(sa.select(User))}
        tokens = {name: personal_token(session, by_email[email_for(name)])[1]
                  for name in ("Chiara Rossi", "Dmitri Volkov")}
        open_requests = {(r.requester_id, r.resource_id): r for r in session.scalars(
            sa.select(AccessRequest).where(AccessRequest.workflow_id.startswith("request-")))}
        grants = session.scalars(sa.select(Grant).where(Grant.revoked_at.is_(None),
                                                        Grant.expires_at < utcnow() + timedelta(hours=9))).all()
    assert len(open_requests) == len(LIVE_REQUESTS)
    ending = sorted((g.expires_at - utcnow()).total_seconds() / 3600 for g in grants if g.state == "active")
    assert len(ending) == 2 and 0.9 < ending[0] <= 1 and 7.9 < ending[1] <= 8, "grants that end within hours"

    def as_(name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {tokens[name]}", "Accept": "application/json"}

    with TestClient(create_app(settings)) as server:
        waiting = server.get("/approvals", headers=as_("Chiara Rossi")).json()
        assert sorted(row["requester"] for row in waiting) == ["Dana Levi", "Kaja Nowak", "Mei Chen"]
        half_approved = server.get("/approvals", headers=as_("Dmitri Volkov")).json()
        assert "Pedro Alves" in {row["requester"] for row in half_approved}

        dana = next(row for row in waiting if row["requester"] == "Dana Levi")
        answer = server.post(f"/requests/{dana['id']}/approve", headers=as_("Chiara Rossi"))
        assert answer.status_code == 200, answer.text
        assert server.get(f"/requests/{dana['id']}", headers=as_("Chiara Rossi")).json()["status"] == "approved"
