"""Sign-in through an OpenID Connect provider (issue 14), against a real one: panva's certified
`oidc-provider`, started on loopback with a throwaway configuration (tests/support/oidc_provider.py).

People are created and updated from the ID token's claims, their role follows the groups claim
at every sign-in, a state works once and only in the browser that started it, the provider's
refusal signs nobody in, and a token that is tampered with, meant for another client, expired
or for another nonce is refused. With passwords off only the break-glass account may use one,
and it is audited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import sqlalchemy as sa
from authlib.integrations.httpx_client import OAuth2Client
from joserfc.jwk import KeySet
from starlette.testclient import TestClient

from support import oidc_provider
from support.access import make_resource
from support.oidc_provider import LoginRefused, OpenIdProvider, cancel_headless, sign_in_headless
from support.web import PASSWORD, csrf_token
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AuditEvent, OidcLogin, ResourceApprover, User
from webapp.services.oidc import OidcRefused, verified_claims

pytestmark = pytest.mark.skipif(not oidc_provider.available(), reason="the test OpenID provider is not installed "
                                "(node, and `npm ci` in tests/support/oidc: support.oidc_provider.install())")

CLIENT_ID, SECRET = "gatehouse", "gatehouse-oidc-test-secret"
OTHER_ID, OTHER_SECRET = "another-app", "another-app-secret"
CALLBACK = "http://testserver/auth/callback"
SCOPES = "openid email profile groups"
ACCOUNTS = {
    "alice": {"email": "alice@example.com", "email_verified": True, "name": "Alice Doe",
              "groups": ["gatehouse-admins", "everyone"], "department": "Security", "title": "CISO"},
    "bob": {"email": "bob@example.com", "email_verified": True, "name": "Bob Roe",
            "groups": ["gatehouse-approvers"], "department": "Platform", "title": "SRE"},
    "carol": {"email": "carol@example.com", "email_verified": True, "name": "Carol Poe", "groups": []},
}


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[OpenIdProvider]:
    clients = [{"client_id": CLIENT_ID, "client_secret": SECRET, "redirect_uris": [CALLBACK],
                "post_logout_redirect_uris": ["http://testserver/login"]},
               {"client_id": OTHER_ID, "client_secret": OTHER_SECRET, "redirect_uris": ["http://other.test/cb"]}]
    with OpenIdProvider(tmp_path, clients=clients, accounts=ACCOUNTS) as running:
        yield running


def oidc_settings(settings: Settings, provider: OpenIdProvider, **more: Any) -> Settings:
    return settings.model_copy(update={
        "base_url": "http://testserver", "oidc_issuer": provider.issuer, "oidc_client_id": CLIENT_ID,
        "oidc_client_secret": SECRET, "oidc_scopes": SCOPES, "oidc_provider_name": "Example SSO", **more})


@pytest.fixture
def client(settings: Settings, provider: OpenIdProvider, people: dict[str, User]) -> Iterator[TestClient]:
    with TestClient(create_app(oidc_settings(settings, provider))) as running:
        yield running


def leave_for_provider(client: TestClient, next_url: str = "/") -> str:
    started = client.get(f"/login/oidc?next={next_url}", follow_redirects=False)
    assert started.status_code == 303, started.text
    assert started.headers["location"].startswith(client.app.state.settings.oidc_issuer)  # type: ignore[attr-defined]
    return str(started.headers["location"])


def come_back(client: TestClient, callback: str) -> Any:
    assert callback.startswith(CALLBACK), callback
    return client.get(callback.removeprefix("http://testserver"), follow_redirects=False)


def sign_in_as(client: TestClient, login: str, next_url: str = "/") -> Any:
    return come_back(client, sign_in_headless(leave_for_provider(client, next_url), login))


def user(database: Database, email: str) -> User | None:
    with database.session() as session:
        return session.scalar(sa.select(User).where(User.email == email))


def test_people_sign_in_through_the_provider_with_their_claims(client: TestClient, database: Database,
                                                             provider: OpenIdProvider) -> None:
    answer = sign_in_as(client, "alice", "/my/requests")
    assert answer.status_code == 303 and answer.headers["location"] == "/my/requests"
    assert "Alice Doe" in client.get("/my/requests").text
    alice = user(database, "alice@example.com")
    assert alice is not None and (alice.name, alice.department, alice.title, alice.role) == \
        ("Alice Doe", "Security", "CISO", "admin")
    assert alice.password_hash is None and alice.oidc_subject == f"{provider.issuer} alice"
    with database.session() as session:
        signed = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "auth.signed_in")).one()
        assert session.scalar(sa.select(sa.func.count()).select_from(OidcLogin)) == 0, "each trip's row is spent"
    assert signed.details["via"] == "oidc" and signed.actor == "alice@example.com"

    provider.set_account("alice", {**ACCOUNTS["alice"], "email": "alice.doe@example.com", "title": "CTO"})
    again = TestClient(client.app)
    assert sign_in_as(again, "alice").status_code == 303
    renamed = user(database, "alice.doe@example.com")
    assert renamed is not None and renamed.id == alice.id and renamed.title == "CTO", "found by subject"


def test_the_groups_claim_sets_the_role_at_every_sign_in(client: TestClient, database: Database,
                                                        people: dict[str, User], provider: OpenIdProvider) -> None:
    assert sign_in_as(client, "bob").status_code == 303
    bob = user(database, "bob@example.com")
    assert bob is not None and bob.role == "approver"
    with database.session() as session:
        resource_id = make_resource(database, people, "wiki", approvers=())
        session.add(ResourceApprover(resource_id=resource_id, user_id=bob.id))
    assert client.get("/approvals").status_code == 200

    provider.set_account("bob", {**ACCOUNTS["bob"], "groups": ["everyone"]})  # left every mapped group
    later = TestClient(client.app)
    assert sign_in_as(later, "bob").status_code == 303
    demoted = user(database, "bob@example.com")
    assert demoted is not None and demoted.role == "member"
    assert later.get("/approvals", follow_redirects=False).status_code == 403
    with database.session() as session:
        assert session.scalars(sa.select(ResourceApprover).where(ResourceApprover.user_id == bob.id)).all() == []
        changed = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "user.role_changed")).one()
    assert (changed.actor, changed.details["from"], changed.details["to"]) == ("oidc", "approver", "member")


def test_without_a_group_mapping_sign_in_leaves_roles_alone(settings: Settings, provider: OpenIdProvider,
                                                            database: Database, people: dict[str, User]) -> None:
    """A provider without groups (Google): roles are set by admins, and a sign-in keeps them."""
    with TestClient(create_app(oidc_settings(settings, provider, oidc_role_groups=""))) as browser:
        assert sign_in_as(browser, "carol").status_code == 303
        with database.session() as session:
            session.execute(sa.update(User).where(User.email == "carol@example.com").values(role="approver"))
        assert sign_in_as(TestClient(browser.app), "carol").status_code == 303
    carol = user(database, "carol@example.com")
    assert carol is not None and carol.role == "approver"


def test_a_state_works_once_and_only_in_its_own_browser(client: TestClient, database: Database) -> None:
    callback = sign_in_headless(leave_for_provider(client), "carol")
    elsewhere = TestClient(client.app)  # an attacker's code and state, pasted into another browser
    refused = come_back(elsewhere, callback)
    assert refused.status_code == 400 and "did not start in this browser" in refused.text
    assert user(database, "carol@example.com") is None

    callback = sign_in_headless(leave_for_provider(client), "carol")
    assert come_back(client, callback).status_code == 303
    replayed = come_back(TestClient(client.app, cookies=dict(client.cookies)), callback)
    assert replayed.status_code == 400 and "used already" in replayed.text
    made_up = client.get("/auth/callback?code=abc&state=never-issued", follow_redirects=False)
    assert made_up.status_code == 400


def test_whom_the_provider_refuses_does_not_sign_in(client: TestClient, database: Database,
                                                    provider: OpenIdProvider) -> None:
    provider.remove_account("carol")
    with pytest.raises(LoginRefused):
        sign_in_headless(leave_for_provider(client), "carol")
    cancelled = come_back(client, cancel_headless(leave_for_provider(client)))
    assert cancelled.status_code == 403 and "did not sign you in (access_denied)" in cancelled.text
    assert client.get("/", follow_redirects=False).status_code == 303, "still signed out"

    assert sign_in_as(client, "alice").status_code == 303
    with database.session() as session:
        session.execute(sa.update(User).where(User.email == "alice@example.com").values(active=False))
    inactive = sign_in_as(TestClient(client.app), "alice")
    assert inactive.status_code == 400 and "This account cannot sign in" in inactive.text


def real_id_token(provider: OpenIdProvider, client_id: str, secret: str, redirect_uri: str,
                  login: str) -> tuple[str, str]:
    """An ID token the provider really issues to `client_id` for `login`, and its nonce."""
    with OAuth2Client(client_id, secret, scope=SCOPES, redirect_uri=redirect_uri, code_challenge_method="S256",
                      timeout=10) as rp:
        verifier, nonce = "v" * 64, "nonce-for-this-test"
        url, _state = rp.create_authorization_url(provider.discovery["authorization_endpoint"], nonce=nonce,
                                                  code_verifier=verifier)
        code = parse_qs(urlsplit(sign_in_headless(url, login)).query)["code"][0]
        token = rp.fetch_token(provider.discovery["token_endpoint"], code=code, code_verifier=verifier)
    return str(token["id_token"]), nonce


def test_tampered_foreign_expired_or_replayed_tokens_are_refused(provider: OpenIdProvider) -> None:
    import httpx

    keys = KeySet.import_key_set(httpx.get(provider.discovery["jwks_uri"]).json())
    token, nonce = real_id_token(provider, CLIENT_ID, SECRET, CALLBACK, "alice")
    now = datetime.now(UTC)
    check = {"issuer": provider.issuer, "client_id": CLIENT_ID, "nonce": nonce, "now": now, "leeway": 60}
    assert verified_claims(token, keys, **check)["groups"] == ["gatehouse-admins", "everyone"]

    header, payload, signature = token.split(".")
    flipped = payload[:10] + ("A" if payload[10] != "A" else "B") + payload[11:]
    foreign, _ = real_id_token(provider, OTHER_ID, OTHER_SECRET, "http://other.test/cb", "alice")
    refusals = {
        "tampered": (f"{header}.{flipped}.{signature}", check),
        "unsigned": (f"{header}.{payload}.", check),
        "for another client": (foreign, check),
        "expired": (token, {**check, "now": now + timedelta(hours=2)}),
        "another sign-in's nonce": (token, {**check, "nonce": "someone-elses"}),
        "another issuer": (token, {**check, "issuer": "http://127.0.0.1:9/"}),
    }
    for what, (candidate, options) in refusals.items():
        with pytest.raises(OidcRefused):
            verified_claims(candidate, keys, **options)
            pytest.fail(f"a token {what} was accepted")


def test_with_passwords_off_only_break_glass_signs_in_and_is_audited(settings: Settings, provider: OpenIdProvider,
                                                                    database: Database,
                                                                    people: dict[str, User]) -> None:
    app = create_app(oidc_settings(settings, provider, password_sign_in=False,
                                   break_glass_email="admin@example.com"))
    with TestClient(app) as browser:
        page = browser.get("/login").text
        assert 'href="/login/oidc?next=/"' in page and "Sign in with Example SSO" in page and "Break-glass" in page
        form = {"password": PASSWORD, "csrf_token": csrf_token(browser)}
        member = browser.post("/login", data={**form, "email": "member@example.com"}, follow_redirects=False)
        assert member.status_code == 403 and "Password sign-in is off here" in member.text
        admin = browser.post("/login", data={**form, "email": "admin@example.com"}, follow_redirects=False)
        assert admin.status_code == 303
        with database.session() as session:
            glass = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "auth.break_glass")).one()
        assert glass.actor == "admin@example.com"

        out = browser.post("/logout", data={"csrf_token": csrf_token(browser)}, follow_redirects=False)
        assert out.headers["location"] == "/login?signed_out=1"
        offered = browser.get("/login?signed_out=1").text
        end_session = provider.discovery["end_session_endpoint"]
        assert f'href="{end_session}?client_id={CLIENT_ID}&amp;post_logout_redirect_uri=' in offered
