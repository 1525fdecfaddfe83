"""The whole life of an access request, through the web app and its durable workflow:
approve, reject, cancel, expire, N-of-M, self-approval, auto-approve, time-bound grants
revoked on time, early revoke, duplicates, double submits, failures and rate limits."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from support.access import REASON, make_resource, status_of, submit
from support.waiting import wait_for
from support.web import csrf_token, post_form, sign_in
from webapp.app import create_app
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    Approval,
    AuditEvent,
    ErrorRecord,
    Grant,
    Notification,
)
from webapp.services.access import reminder_policy
from webapp.workflows.access import DECISION_TOPIC, access_request_workflow


def actions(database: Database, request_id: int) -> list[str]:
    with database.session() as session:
        grant_ids = [f"grant:{g}" for g in session.scalars(sa.select(Grant.id).where(Grant.request_id == request_id))]
        return list(session.scalars(sa.select(AuditEvent.action).where(
            AuditEvent.subject.in_([f"request:{request_id}", *grant_ids])).order_by(AuditEvent.id)))  # type: ignore[attr-defined]


def messages(database: Database, request_id: int) -> list[tuple[str, str]]:
    """(event, recipient) of every sent message about the request, from the outbox."""
    with database.session() as session:
        rows = session.execute(sa.select(Notification.dedup_key, Notification.status)
                               .where(Notification.request_id == request_id)).all()
    return sorted((key.split(":")[2], key.split(":", 3)[3]) for key, status in rows if status == "sent")


def wait_for_messages(database: Database, request_id: int, expected: list[tuple[str, str]]) -> None:
    wait_for(lambda: messages(database, request_id) == sorted(expected), what=f"messages {expected}")


def test_approve(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    resource_id = make_resource(database, people)
    request_id = submit(clients["member"], resource_id)
    assert status_of(database, request_id) == "requested"
    page = clients["approver"].get(f"/requests/{request_id}")
    assert "Approve" in page.text and REASON in page.text
    assert f"/requests/{request_id}" in clients["approver"].get("/approvals").text

    response = post_form(clients["approver"], f"/requests/{request_id}/approve", {"comment": "ok"})
    assert response.status_code == 303
    assert status_of(database, request_id) == "approved"
    # The grant follows the decision in the workflow's next transaction.
    wait_for(lambda: actions(database, request_id) == ["request.submitted", "request.approved", "grant.created"],
             what="the grant")
    wait_for_messages(database, request_id, [
        ("request.submitted", "approver@example.com"), ("request.submitted", "approver2@example.com"),
        ("request.approved", "member@example.com")])
    access = clients["member"].get("/my/access")
    assert "orders-db" in access.text and ">in 8 h</time>" in access.text
    outbox = clients["admin"].get("/notifications")
    assert "Access to orders-db granted" in outbox.text


def test_reject_ends_it_with_one_rejection(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    resource_id = make_resource(database, people, required=2)
    request_id = submit(clients["member"], resource_id)
    assert post_form(clients["approver"], f"/requests/{request_id}/reject", {"comment": "x"}).status_code == 422
    assert post_form(clients["approver"], f"/requests/{request_id}/reject",
                     {"comment": "Use staging instead"}).status_code == 303
    assert status_of(database, request_id) == "rejected"
    late = post_form(clients["approver2"], f"/requests/{request_id}/approve")
    assert late.status_code == 409 and "already rejected" in late.text
    wait_for_messages(database, request_id, [
        ("request.rejected", "member@example.com"),
        ("request.submitted", "approver2@example.com"), ("request.submitted", "approver@example.com")])
    with database.session() as session:
        assert session.scalar(sa.select(Grant.id).where(Grant.request_id == request_id)) is None


def test_cancel_by_the_requester_only(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people))
    assert post_form(clients["approver"], f"/requests/{request_id}/cancel").status_code == 403
    assert post_form(clients["member"], f"/requests/{request_id}/cancel").status_code == 303
    assert status_of(database, request_id) == "canceled"
    assert post_form(clients["approver"], f"/requests/{request_id}/approve").status_code == 409


def test_expires_when_nobody_decides(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people, pending_ttl_seconds=1))
    wait_for(lambda: status_of(database, request_id) == "expired", what="expiry")
    assert actions(database, request_id)[-1] == "request.expired"
    wait_for(lambda: ("request.expired", "member@example.com") in messages(database, request_id), what="message")


def test_n_of_m_distinct_approvals(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people, required=2))
    assert post_form(clients["approver"], f"/requests/{request_id}/approve").status_code == 303
    assert status_of(database, request_id) == "requested"
    assert "1 of 2 needed" in clients["member"].get(f"/requests/{request_id}").text
    repeated = post_form(clients["approver"], f"/requests/{request_id}/approve")
    assert repeated.status_code == 409 and "already approved" in repeated.text
    assert status_of(database, request_id) == "requested"
    assert post_form(clients["approver2"], f"/requests/{request_id}/approve").status_code == 303
    assert status_of(database, request_id) == "approved"
    with database.session() as session:
        counted = session.execute(sa.select(Approval.approver_id, Approval.counted)
                                  .where(Approval.request_id == request_id).order_by(Approval.id)).all()
    assert counted == [(people["approver"].id, True), (people["approver"].id, False), (people["approver2"].id, True)]


def test_an_approver_cannot_approve_their_own_request(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["approver"], make_resource(database, people))
    refused = post_form(clients["approver"], f"/requests/{request_id}/approve")
    assert refused.status_code == 403 and "your own request" in refused.text
    # Even a message sent straight to the workflow is recorded and ignored.
    with database.session() as session:
        workflow_id = session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr]
    DBOS.send(workflow_id, {"id": "forged", "kind": "approve", "actor_id": people["approver"].id}, DECISION_TOPIC)
    wait_for(lambda: "decision.ignored" in actions(database, request_id), what="ignored decision")
    assert status_of(database, request_id) == "requested"
    # The other approver is not asked about it... and the requester is not asked either.
    wait_for_messages(database, request_id, [("request.submitted", "approver2@example.com")])


def test_auto_approve(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people, "vpn", auto_approve=True), "permanent")
    assert status_of(database, request_id) == "approved"
    assert actions(database, request_id) == ["request.submitted", "request.auto_approved", "grant.created"]
    wait_for_messages(database, request_id, [("request.approved", "member@example.com")])
    with database.session() as session:
        grant = session.scalars(sa.select(Grant).where(Grant.request_id == request_id)).one()
    assert grant.expires_at is None and grant.revoked_at is None


def test_time_bound_grant_gets_a_reminder_and_is_revoked_on_time(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                                 fast_settings) -> None:
    resource_id = make_resource(database, people, "short-lived", auto_approve=True)
    submission = {"requester_id": people["member"].id, "resource_id": resource_id, "duration_seconds": 3,
                  "reason": REASON, "reminder": reminder_policy(fast_settings)}
    with SetWorkflowID(f"test-time-bound-{uuid.uuid4().hex}"):
        handle = DBOS.start_workflow(access_request_workflow, submission)
    assert handle.get_result() == "approved"  # returns once the grant has ended
    with database.session() as session:
        grant = session.scalars(sa.select(Grant)).one()
        request_id = grant.request_id
    assert grant.revoked_at is not None and grant.expires_at is not None
    assert grant.revoked_at >= grant.expires_at
    assert (grant.revoked_at - grant.expires_at).total_seconds() < 2
    assert status_of(database, request_id) == "revoked"  # type: ignore[arg-type]
    wait_for_messages(database, request_id, [  # type: ignore[arg-type]
        ("grant.expired", "member@example.com"), ("grant.expiring", "member@example.com"),
        ("request.approved", "member@example.com")])


def test_early_revoke_reaches_the_sleeping_workflow(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people, "aws-prod", auto_approve=True), "30d")
    with database.session() as session:
        grant = session.scalars(sa.select(Grant).where(Grant.request_id == request_id)).one()
        workflow_id = session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr]
    assert DBOS.get_workflow_status(workflow_id).status == "PENDING"  # type: ignore[union-attr]
    assert post_form(clients["member"], f"/grants/{grant.id}/revoke").status_code == 403
    response = post_form(clients["admin"], f"/grants/{grant.id}/revoke", {"note": "left the team"})
    assert response.status_code == 303
    assert status_of(database, request_id) == "revoked"
    assert DBOS.retrieve_workflow(workflow_id).get_result() == "approved"  # woke up and finished
    assert post_form(clients["admin"], f"/grants/{grant.id}/revoke").status_code == 409
    wait_for_messages(database, request_id, [("grant.revoked", "member@example.com"),
                                             ("request.approved", "member@example.com")])
    assert "orders-db" not in clients["member"].get("/my/access").text


def test_duplicates_and_double_submits(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    resource_id = make_resource(database, people)
    key = uuid.uuid4().hex
    first = submit(clients["member"], resource_id, key=key)
    assert submit(clients["member"], resource_id, key=key) == first  # the same form sent twice
    again = post_form(clients["member"], "/requests", {"resource_id": resource_id, "duration": "8h",
                                                       "reason": REASON, "form_key": uuid.uuid4().hex})
    assert again.status_code == 422
    assert f"already have a pending request for orders-db (#{first})" in again.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AccessRequest)) == 1


def test_duration_above_the_resource_maximum_is_refused(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    resource_id = make_resource(database, people, max_duration_seconds=8 * 3600)
    response = post_form(clients["member"], "/requests", {"resource_id": resource_id, "duration": "7d",
                                                          "reason": REASON, "form_key": uuid.uuid4().hex})
    assert response.status_code == 422 and "grants at most 8 hours" in response.text
    short = post_form(clients["member"], "/requests", {"resource_id": resource_id, "duration": "1h",
                                                       "reason": "too short", "form_key": uuid.uuid4().hex})
    assert short.status_code == 422 and "at least 10 characters" in short.text


def test_submission_rate_limit(settings, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    app = create_app(settings.model_copy(update={"submit_rate_limit": 2, "submit_rate_period": 60}))
    resources = [make_resource(database, people, f"r{n}") for n in range(3)]
    with TestClient(app) as client:
        sign_in(client, "member@example.com")
        submit(client, resources[0])
        submit(client, resources[1])
        limited = post_form(client, "/requests", {"resource_id": resources[2], "duration": "8h", "reason": REASON,
                                                  "form_key": uuid.uuid4().hex})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["retry-after"]) <= 60
        api = client.post("/requests", data={"resource_id": resources[2], "duration": "8h", "reason": REASON,
                                             "form_key": uuid.uuid4().hex, "csrf_token": csrf_token(client)},
                          headers={"Accept": "application/json"})
        assert api.status_code == 429 and api.json()["status"] == 429
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AccessRequest)) == 2


def test_a_failing_step_records_the_error_and_shows_it(clients, database: Database, people, on_postgres) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people))
    with database.engine.begin() as conn:  # the grants table goes away: creating the grant fails
        conn.execute(sa.text("ALTER TABLE grants RENAME TO grants_elsewhere"))
    try:
        post_form(clients["approver"], f"/requests/{request_id}/approve")
        wait_for(lambda: status_of(database, request_id) == "failed", what="failure")
    finally:
        with database.engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE grants_elsewhere RENAME TO grants"))
    with database.session() as session:
        error = session.scalars(sa.select(ErrorRecord).where(ErrorRecord.request_id == request_id)).one()
        workflow_id = session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr]
    assert error.source == "workflow.access" and error.workflow_id == workflow_id
    assert error.message["error_type"] and "grants" in error.message["message"]
    page = clients["member"].get(f"/requests/{request_id}")
    assert "failed" in page.text and "Failure" in page.text
    assert DBOS.get_workflow_status(workflow_id).status == "ERROR"  # type: ignore[union-attr]


def test_viewing_is_limited_to_those_involved(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    request_id = submit(clients["member"], make_resource(database, people, approvers=("approver",)))
    assert clients["approver"].get(f"/requests/{request_id}").status_code == 200
    assert clients["admin"].get(f"/requests/{request_id}").status_code == 200
    assert clients["approver2"].get(f"/requests/{request_id}").status_code == 404
    assert post_form(clients["approver2"], f"/requests/{request_id}/approve").status_code == 404
    data = clients["member"].get(f"/requests/{request_id}", headers={"Accept": "application/json"}).json()
    assert data["status"] == "requested" and data["resource"] == "orders-db"
    assert data["workflow_id"].startswith(f"request-{people['member'].id}-")
