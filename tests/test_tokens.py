"""API tokens (issue 12, F1): personal, expiring, scoped, and named by every audit row
written with them. The review's attack: an admin minted a token for an approver and
approved their own request with it, leaving an audit row that named only the approver."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import REASON, make_resource, status_of, submit
from support.waiting import wait_for
from support.web import personal_token, post_form, sign_in
from webapp.core.db import Database
from webapp.core.models import ApiToken, AuditEvent, User, utcnow
from webapp.services import tokens
from webapp.services.identity import principal_of

JSON = {"Accept": "application/json"}


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}", **JSON}


def token_rows(database: Database) -> list[ApiToken]:
    with database.session() as session:
        return list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))


def events(database: Database, action: str) -> list[AuditEvent]:
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)))


def secret_on(page: str) -> str:
    return page.split('id="new-secret" readonly value="')[1].split('"')[0]


def test_an_admin_cannot_mint_a_token_for_an_approver(client: TestClient, people: dict[str, Any],
                                                     database: Database) -> None:
    resource_id = make_resource(database, people, approvers=("approver",))
    sign_in(client, "admin@example.com")
    own_request = submit(client, resource_id)

    minted = post_form(client, f"/admin/users/{people['approver'].id}/tokens",
                       {"name": "borrowed", "scopes": "decide", "days": "1"})
    assert minted.status_code == 403 and "Tokens are personal" in minted.text
    assert token_rows(database) == [], "nothing was issued"
    with database.session() as session:
        approver = session.get(User, people["approver"].id)
        with pytest.raises(tokens.TokenRefused, match="Tokens are personal"):
            tokens.issue_token(session, user=approver, issued_by=principal_of(session.get(User, people["admin"].id)),
                               now=utcnow(), name="borrowed")
    assert status_of(database, own_request) == "requested"
    page = client.get(f"/admin/users/{people['approver'].id}")
    assert "issues their own" in page.text and 'action="/admin/users/' + str(people["approver"].id) + '/tokens"' \
        not in page.text, "no issuing form for a person's tokens"


def test_people_issue_their_own_tokens_with_scopes_and_a_lifetime(client: TestClient, people: dict[str, Any],
                                                                  database: Database, app: Any) -> None:
    make_resource(database, people)
    sign_in(client, "member@example.com")
    page = client.get("/account/tokens")
    assert page.status_code == 200 and 'value="read"' in page.text and 'value="decide"' in page.text
    assert 'value="operate"' not in page.text, "a member's tokens cannot operate"

    refused = {
        "a life past TOKEN_MAX_DAYS": ({"name": "ci", "scopes": "read", "days": "91"}, "days"),
        "a scope beyond the role": ({"name": "ci", "scopes": "operate", "days": "7"}, "scopes"),
        "no scope": ({"name": "ci", "days": "7"}, "scopes"),
        "no name": ({"name": " ", "scopes": "read", "days": "7"}, "name"),
        "a life that is not a number": ({"name": "ci", "scopes": "read", "days": "soon"}, "days"),
    }
    for why, (form, field) in refused.items():
        answer = post_form(client, "/account/tokens", form)
        assert answer.status_code == 422, why
        assert f'id="{field}-error"' in answer.text, why
    assert token_rows(database) == []

    issued = post_form(client, "/account/tokens", {"name": "reporting", "scopes": "read", "days": "30"})
    assert issued.status_code == 201 and issued.headers["cache-control"] == "no-store"
    secret = secret_on(issued.text)
    [row] = token_rows(database)
    assert (row.user_id, row.created_by_id, row.scopes) == (people["member"].id, people["member"].id, "read")
    assert timedelta(days=29, hours=23) < row.expires_at - utcnow() <= timedelta(days=30)

    script = TestClient(app)
    assert script.get("/my/requests", headers=bearer(secret)).status_code == 200
    denied = script.post("/requests", headers=bearer(secret), data={
        "resource_id": 1, "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
    assert denied.status_code == 403 and "lacks the decide scope" in denied.json()["error"]
    assert events(database, "request.submitted") == [], "a read token changed nothing"
    assert script.post("/account/tokens", headers=bearer(secret),
                       data={"name": "x", "scopes": "read", "days": "1"}).status_code == 403, \
        "tokens are managed from a browser, not with another token"

    assert post_form(client, f"/account/tokens/{row.id}/revoke").status_code == 303
    assert script.get("/my/requests", headers=bearer(secret)).status_code == 401


def test_an_expired_token_is_refused(client: TestClient, people: dict[str, Any], database: Database) -> None:
    with database.session() as session:
        token, secret = personal_token(session, session.get(User, people["member"].id), days=1)  # type: ignore[arg-type]
    assert client.get("/my/requests", headers=bearer(secret)).status_code == 200
    with database.session() as session:
        session.get(ApiToken, token.id).expires_at = utcnow() - timedelta(seconds=1)  # type: ignore[union-attr]
    answer = client.get("/my/requests", headers=bearer(secret))
    assert answer.status_code == 401 and "expired" in answer.json()["error"]
    sign_in(client, "member@example.com")
    assert "expired" in client.get("/account/tokens").text


def test_every_audit_row_written_with_a_token_names_it(client: TestClient, people: dict[str, Any],
                                                       database: Database) -> None:
    resource_id = make_resource(database, people, approvers=("approver",))
    with database.session() as session:
        member_token, member = personal_token(session, session.get(User, people["member"].id))  # type: ignore[arg-type]
        approver_token, approver = personal_token(session, session.get(User, people["approver"].id))  # type: ignore[arg-type]
        admin_token, admin = personal_token(session, session.get(User, people["admin"].id))  # type: ignore[arg-type]

    asked = client.post("/requests", headers=bearer(member), data={
        "resource_id": resource_id, "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
    assert asked.status_code == 201, asked.text
    request_id = asked.json()["id"]
    assert client.post(f"/requests/{request_id}/approve", headers=bearer(approver)).status_code == 200
    grant = wait_for(lambda: client.get(f"/requests/{request_id}", headers=bearer(admin)).json()["grant"],
                     what="the grant")
    assert client.post(f"/grants/{grant['id']}/revoke", headers=bearer(admin), data={"note": "done"}).status_code \
        == 200
    made = client.post("/admin/resources", headers=bearer(admin), data={
        "name": "wiki", "kind": "app", "approvals_required": "1", "max_duration": "7d", "pending_ttl_hours": "24",
        "approvers": str(people["approver"].id)})
    assert made.status_code in (200, 201, 303), made.text

    named = {action: [e.token_id for e in events(database, action)]
             for action in ("request.submitted", "request.approved", "grant.revoked", "resource.created")}
    assert named == {"request.submitted": [member_token.id], "request.approved": [approver_token.id],
                     "grant.revoked": [admin_token.id], "resource.created": [admin_token.id]}
    assert [e.token_id for e in events(database, "grant.created")] == [None], "the workflow's own rows name none"

    sign_in(client, "member@example.com")  # a browser session's rows name no token
    submit(client, make_resource(database, people, "crm", approvers=("approver",)))
    assert [(e.token_id, e.channel) for e in events(database, "request.submitted")] == [(member_token.id, "api"),
                                                                                      (None, "web")]
    assert [e.channel for e in events(database, "request.approved")] == ["api"]
    assert [e.channel for e in events(database, "grant.created")] == [None], "nor a channel: Gatehouse did it"
    sign_in(client, "admin@example.com")
    log = client.get("/audit?action=request.approved")
    assert f"(API, token #{approver_token.id})" in log.text
    assert client.get("/audit?action=request.approved", headers=JSON).json()["events"][0]["token_id"] == \
        approver_token.id


def test_service_accounts_hold_admin_issued_tokens_and_never_decide(client: TestClient, people: dict[str, Any],
                                                                     database: Database) -> None:
    resource_id = make_resource(database, people, approvers=("approver",))
    sign_in(client, "admin@example.com")
    assert post_form(client, "/admin/users", {"email": "sync@example.com", "name": "Nightly sync", "role": "admin",
                                              "service": "on", "password": "a long enough password"}
                     ).status_code == 422, "a service account has no password"
    assert post_form(client, "/admin/users", {"email": "sync@example.com", "name": "Nightly sync", "role": "admin",
                                              "service": "on"}).status_code == 303
    with database.session() as session:
        service = session.scalars(sa.select(User).where(User.email == "sync@example.com")).one()
        assert service.is_service and service.password_hash is None

    page = client.get(f"/admin/users/{service.id}")
    assert "Service account" in page.text and 'value="decide"' not in page.text
    refused = post_form(client, f"/admin/users/{service.id}/tokens", {"name": "sync", "scopes": "decide",
                                                                      "days": "30"})
    assert refused.status_code == 422 and "cannot decide requests" in refused.text
    issued = post_form(client, f"/admin/users/{service.id}/tokens",
                       {"name": "sync", "scopes": ["read", "operate"], "days": "90"})
    assert issued.status_code == 201, issued.text
    secret = secret_on(issued.text)

    sign_in(client, "member@example.com")
    request_id = submit(client, resource_id)
    script = TestClient(client.app)
    assert script.get("/ops/queues", headers=bearer(secret)).status_code == 200
    denied = script.post(f"/requests/{request_id}/approve", headers=bearer(secret))
    assert denied.status_code == 403
    assert status_of(database, request_id) == "requested"
    sign_in(client, "admin@example.com")
    not_an_approver = post_form(client, f"/admin/resources/{resource_id}", {
        "name": "orders-db", "kind": "database", "approvals_required": "1", "max_duration": "7d",
        "pending_ttl_hours": "24", "approvers": [str(people["approver"].id), str(service.id)]})
    assert not_an_approver.status_code == 422 and "not service accounts" in not_an_approver.text
