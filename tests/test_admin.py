"""Admins manage people, their tokens, and resources with their approvers."""

from __future__ import annotations

import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_resource, submit
from support.web import post_form, sign_in
from webapp.core.db import Database
from webapp.core.models import ApiToken, AuditEvent, Resource, ResourceApprover, User
from webapp.services import accounts


def test_admin_adds_a_person_and_sees_them_listed(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    response = post_form(client, "/admin/users", {"email": "New@Example.com", "name": "Nia New",
                                                   "department": "Data", "role": "approver"})
    assert response.status_code == 303
    listing = client.get("/admin/users?q=nia")
    assert "Nia New" in listing.text and "1 person" in listing.text
    with database.session() as session:
        user = session.scalars(sa.select(User).where(User.email == "new@example.com")).one()
        assert user.role == "approver" and user.password_hash is None
        assert session.scalar(sa.select(AuditEvent.actor).where(AuditEvent.action == "user.created",
                                                                 AuditEvent.subject == f"user:{user.id}")) == "admin@example.com"


def test_invalid_person_is_refused_with_field_errors(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    response = post_form(client, "/admin/users", {"email": "", "name": "<b>x</b>", "role": "root", "password": "short"})
    assert response.status_code == 422
    assert 'id="email-error"' in response.text and 'id="role-error"' in response.text and 'id="password-error"' in response.text
    assert "<b>x</b>" not in response.text and "&lt;b&gt;x&lt;/b&gt;" in response.text
    duplicate = post_form(client, "/admin/users", {"email": "member@example.com", "name": "Again"})
    assert duplicate.status_code == 422 and "already exists" in duplicate.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == len(people)


def test_role_changes_and_the_last_admin_is_kept(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    member_id, admin_id = people["member"].id, people["admin"].id
    assert post_form(client, f"/admin/users/{member_id}/role", {"role": "approver"}).status_code == 303
    refused = post_form(client, f"/admin/users/{admin_id}/role", {"role": "member"})
    assert refused.status_code == 422 and "last active admin" in refused.text
    refused = post_form(client, f"/admin/users/{admin_id}/active", {"active": "false"})
    assert refused.status_code == 422
    with database.session() as session:
        assert session.get(User, member_id).role == "approver"  # type: ignore[union-attr]
        assert session.get(User, admin_id).role == "admin"  # type: ignore[union-attr]
        assert session.get(User, admin_id).active  # type: ignore[union-attr]


def test_deactivating_signs_the_person_out_everywhere(client: TestClient, people, app) -> None:  # type: ignore[no-untyped-def]
    member = TestClient(app)
    sign_in(member, "member@example.com")
    assert member.get("/").status_code == 200
    sign_in(client, "admin@example.com")
    assert post_form(client, f"/admin/users/{people['member'].id}/active", {"active": "false"}).status_code == 303
    assert member.get("/", follow_redirects=False).status_code == 303
    assert "deactivated" in client.get(f"/admin/users/{people['member'].id}").text


def test_reactivating_a_person_brings_back_none_of_their_tokens(client: TestClient, people, app) -> None:  # type: ignore[no-untyped-def]
    member_id = people["member"].id
    sign_in(client, "member@example.com")
    issued = post_form(client, "/account/tokens", {"name": "laptop", "scopes": "read", "days": "30"})
    secret = issued.text.split('id="new-secret" readonly value="')[1].split('"')[0]
    script = TestClient(app)
    bearer = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    assert script.get("/my/access", headers=bearer).status_code == 200
    sign_in(client, "admin@example.com")
    assert post_form(client, f"/admin/users/{member_id}/active", {"active": "false"}).status_code == 303
    assert post_form(client, f"/admin/users/{member_id}/active", {"active": "true"}).status_code == 303
    assert script.get("/my/access", headers=bearer).status_code == 401, "deactivation revoked the token"
    assert "revoked" in client.get(f"/admin/users/{member_id}").text


def test_tokens_are_shown_once_and_any_admin_can_revoke_them(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    issued = post_form(client, "/account/tokens", {"name": "nightly sync", "scopes": ["read", "decide"], "days": "7"})
    assert issued.status_code == 201 and issued.headers["cache-control"] == "no-store"
    secret = issued.text.split('id="new-secret" readonly value="')[1].split('"')[0]
    assert secret.startswith("gh_")
    later = client.get("/account/tokens")
    assert secret not in later.text and secret[:10] in later.text
    with database.session() as session:
        token = session.scalars(sa.select(ApiToken)).one()
        assert token.token_hash != secret and secret not in token.token_hash
    api = TestClient(client.app)
    assert api.get("/", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    sign_in(client, "admin@example.com")
    assert secret[:10] in client.get(f"/admin/users/{people['member'].id}").text
    # A token id under another person is not found, not revoked.
    assert post_form(client, f"/admin/users/{people['admin'].id}/tokens/{token.id}/revoke").status_code == 404
    assert post_form(client, f"/admin/users/{people['member'].id}/tokens/{token.id}/revoke").status_code == 303
    assert api.get("/", headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"}).status_code == 401


def test_resources_with_approvers(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    approvers = [str(people["approver"].id), str(people["approver2"].id)]
    created = post_form(client, "/admin/resources", {
        "name": "billing-db", "kind": "database", "description": "Billing replica",
        "approvals_required": "2", "max_duration": "7d", "pending_ttl_hours": "24", "approvers": approvers,
    })
    assert created.status_code == 303
    with database.session() as session:
        resource = session.scalars(sa.select(Resource).where(Resource.name == "billing-db")).one()
        assert (resource.approvals_required, resource.max_duration_seconds, resource.pending_ttl_seconds) == (2, 7 * 86400, 86400)
        assert {r.user_id for r in session.scalars(sa.select(ResourceApprover))} == {int(a) for a in approvers}
    page = client.get("/admin/resources")
    assert "billing-db" in page.text and "7 days" in page.text

    too_few = post_form(client, f"/admin/resources/{resource.id}", {
        "name": "billing-db", "approvals_required": "3", "max_duration": "7d", "pending_ttl_hours": "24",
        "approvers": approvers,
    })
    assert too_few.status_code == 422 and "3 approvals are required" in too_few.text
    members_cannot_approve = post_form(client, f"/admin/resources/{resource.id}", {
        "name": "billing-db", "approvals_required": "1", "max_duration": "7d", "pending_ttl_hours": "24",
        "approvers": [str(people["member"].id)],
    })
    assert members_cannot_approve.status_code == 422
    renamed = post_form(client, f"/admin/resources/{resource.id}", {
        "name": "billing-replica", "approvals_required": "1", "max_duration": "permanent",
        "pending_ttl_hours": "72", "approvers": approvers[:1],
    })
    assert renamed.status_code == 303
    with database.session() as session:
        assert session.get(Resource, resource.id).name == "billing-replica"  # type: ignore[union-attr]
        assert session.scalar(sa.select(sa.func.count()).select_from(ResourceApprover)) == 1
        actions = session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject == f"resource:{resource.id}")).all()
        assert list(actions) == ["resource.created", "resource.updated"]


def test_unknown_ids_are_404(client: TestClient, people) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    assert client.get("/admin/users/999999").status_code == 404
    assert client.get("/admin/resources/99999999999999999999").status_code == 404
    fragment = client.get("/admin/users/999999", headers={"HX-Request": "true"})
    assert fragment.status_code == 404 and "<html" not in fragment.text


def test_demoting_or_deactivating_an_approver_takes_them_off_their_resources(client: TestClient, people, app,  # type: ignore[no-untyped-def]
                                                                              database: Database) -> None:
    """A person who can no longer decide keeps neither the view of those requests nor a place
    among the approvers; the admin is told which resources fall short."""
    strict = make_resource(database, people, "vault", required=2)  # approvers: approver, approver2
    loose = make_resource(database, people, "wiki", required=1)
    approver = TestClient(app)
    sign_in(approver, "approver@example.com")
    member = TestClient(app)
    sign_in(member, "member@example.com")
    request_id = submit(member, strict)
    assert request_id in [r["id"] for r in approver.get("/requests", headers={"Accept": "application/json"}).json()["rows"]]

    sign_in(client, "admin@example.com")
    demoted = post_form(client, f"/admin/users/{people['approver'].id}/role", {"role": "member"})
    assert demoted.status_code == 303
    page = client.get(demoted.headers["location"]).text
    assert "vault (1 of 2 approvers)" in page and "wiki" not in page.split('id="flash"', 1)[1].split("</p>", 1)[0]
    assert 'id="flash"' not in client.get(demoted.headers["location"]).text, "shown once"
    assert approver.get("/requests", headers={"Accept": "application/json"}).json()["rows"] == [], "no longer sees them"
    with database.session() as session:
        approvers = {(r.resource_id, r.user_id) for r in session.scalars(sa.select(ResourceApprover))}
    assert approvers == {(strict, people["approver2"].id), (loose, people["approver2"].id)}
    assert post_form(client, f"/admin/users/{people['approver2'].id}/active", {"active": "false"}).status_code == 303
    with database.session() as session:
        assert session.scalars(sa.select(ResourceApprover)).all() == []
        short = accounts.short_of_approvers(session, [strict, loose])
    assert [(s.name, s.approvers, s.required) for s in short] == [("vault", 0, 2), ("wiki", 0, 1)]
