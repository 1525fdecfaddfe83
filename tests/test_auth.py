"""Signing in and out, sessions, throttling, API tokens and CSRF, as users meet them."""

from __future__ import annotations

import re
from datetime import timedelta

import sqlalchemy as sa
from starlette.testclient import TestClient

from support.web import PASSWORD, csrf_token, personal_token, post_form, sign_in
from webapp.app import create_app
from webapp.core.db import Database
from webapp.core.models import AuditEvent, LoginAttempt, User, UserSession, utcnow
from webapp.web.csrf import unmask


def audit_actions(database: Database) -> list[str]:
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all())


def test_sign_in_opens_a_session_with_safe_cookie_flags(client: TestClient, people) -> None:  # type: ignore[no-untyped-def]
    response = post_form(client, "/login", {"email": "Member@Example.com ", "password": PASSWORD, "next": "/admin"})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    cookie = [c for c in response.headers.get_list("set-cookie") if c.startswith("gh_session=")][0]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    page = client.get("/")
    assert page.status_code == 200 and "Mo Member" in page.text


def test_cookies_are_secure_behind_https(settings, people) -> None:  # type: ignore[no-untyped-def]
    from webapp.app import create_app

    app = create_app(settings.model_copy(update={"base_url": "https://gate.example.org"}))
    with TestClient(app, base_url="https://testserver") as client:
        client.get("/login")
        response = client.post("/login", data={"email": "member@example.com", "password": PASSWORD,
                                                "csrf_token": client.cookies["__Host-gh_csrf"]}, follow_redirects=False)
        assert response.status_code == 303
        cookies = response.headers.get_list("set-cookie")
        assert {c.split("=", 1)[0] for c in cookies} == {"__Host-gh_session", "__Host-gh_csrf"}
        assert all("Secure" in c and "Path=/" in c and "Domain" not in c for c in cookies)
        assert client.get("/my/access", headers={"Accept": "application/json"}).status_code == 200, "signed in"
        assert "max-age=31536000" in client.get("/healthz").headers["strict-transport-security"]
        signed_out = client.post("/logout", data={"csrf_token": client.cookies["__Host-gh_csrf"]}, follow_redirects=False)
        assert signed_out.status_code == 303 and "__Host-gh_session" not in client.cookies


def test_unknown_user_and_wrong_password_look_the_same(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    wrong = post_form(client, "/login", {"email": "member@example.com", "password": "not it at all"})
    unknown = post_form(client, "/login", {"email": "nobody@example.com", "password": "not it at all"})
    assert wrong.status_code == unknown.status_code == 422
    message = "That email and password do not match an active account."
    assert message in wrong.text and message in unknown.text
    assert "gh_session" not in client.cookies
    assert audit_actions(database).count("auth.sign_in_failed") == 2


def age_attempts(database: Database, seconds: float) -> None:
    """Move every recorded sign-in attempt `seconds` into the past."""
    with database.session() as session:
        for attempt in session.scalars(sa.select(LoginAttempt)):
            attempt.at -= timedelta(seconds=seconds)


DELAY = 10  # LOGIN_DELAY_SECONDS here: long enough that a slow machine cannot blur 10 s into 20 s


def test_failed_sign_ins_slow_down_that_address_and_never_lock_the_account(people, settings,  # type: ignore[no-untyped-def]
                                                                            database: Database) -> None:
    """Guessing from one address earns that address growing waits; the account's owner,
    signing in from elsewhere, is not locked out (nor is an admin, whoever guesses)."""
    app = create_app(settings.model_copy(update={"login_delay_seconds": DELAY}))
    with TestClient(app, client=("203.0.113.7", 50000)) as guesser:
        owner = TestClient(app, client=("198.51.100.2", 50000))
        for _ in range(settings.login_attempts_per_account):
            assert post_form(guesser, "/login", {"email": "admin@example.com", "password": "guess guess"}
                             ).status_code == 422
        refused = post_form(guesser, "/login", {"email": "admin@example.com", "password": PASSWORD})
        assert refused.status_code == 429, "even the right password waits, unchecked"
        assert DELAY - 3 <= int(refused.headers["retry-after"]) <= DELAY and "Wait " in refused.text
        sign_in(owner, "admin@example.com")  # from another address: at once
        age_attempts(database, DELAY + 0.5)
        assert post_form(guesser, "/login", {"email": "admin@example.com", "password": "guess again"}
                         ).status_code == 422
        doubled = post_form(guesser, "/login", {"email": "admin@example.com", "password": PASSWORD})
        assert doubled.status_code == 429
        assert 2 * DELAY - 3 <= int(doubled.headers["retry-after"]) <= 2 * DELAY, "the wait doubled"
        age_attempts(database, 2 * DELAY + 0.5)
        sign_in(guesser, "admin@example.com")  # after the wait, the right password works


def test_one_address_guessing_many_accounts_is_slowed_down(client: TestClient, people, settings) -> None:  # type: ignore[no-untyped-def]
    for number in range(settings.login_attempts_per_ip):
        post_form(client, "/login", {"email": f"guess{number}@example.com", "password": "guess guess"})
    assert post_form(client, "/login", {"email": "member@example.com", "password": PASSWORD}).status_code == 429


def test_sign_in_rotates_the_session(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    first = client.cookies["gh_session"]
    first_csrf = client.cookies["gh_csrf"]
    sign_in(client, "member@example.com")
    assert client.cookies["gh_session"] != first
    assert client.cookies["gh_csrf"] != first_csrf
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(UserSession)) == 1


def test_sign_out_ends_the_session(client: TestClient, people) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    stolen = client.cookies["gh_session"]
    response = post_form(client, "/logout")
    assert response.status_code == 303 and response.headers["location"] == "/login"
    client.cookies.set("gh_session", stolen)  # a copy of the old cookie is worthless now
    assert client.get("/", follow_redirects=False).status_code == 303


def test_idle_and_absolute_timeouts(client: TestClient, people, database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    with database.session() as session:
        session.execute(sa.update(UserSession).values(
            last_seen_at=utcnow() - timedelta(minutes=settings.session_idle_minutes + 1)))
    assert client.get("/", follow_redirects=False).status_code == 303

    sign_in(client, "member@example.com")
    with database.session() as session:
        session.execute(sa.update(UserSession).values(
            created_at=utcnow() - timedelta(hours=settings.session_absolute_hours, minutes=1)))
    assert client.get("/", follow_redirects=False).status_code == 303


def test_deactivation_ends_sessions_and_tokens_at_once(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        _token, secret = personal_token(session, session.get(User, people["member"].id), name="cli")
    sign_in(client, "member@example.com")
    assert client.get("/").status_code == 200
    assert client.get("/", headers={"Authorization": f"Bearer {secret}"}).status_code == 200

    with database.session() as session:
        session.execute(sa.update(User).where(User.email == "member@example.com").values(active=False))
    assert client.get("/", follow_redirects=False).status_code == 303
    bare = TestClient(client.app)
    assert bare.get("/", headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"}).status_code == 401
    assert post_form(client, "/login", {"email": "member@example.com", "password": PASSWORD}).status_code == 422


def test_api_tokens_authenticate_without_csrf(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        token, secret = personal_token(session, session.get(User, people["admin"].id), name="script")  # type: ignore[arg-type]
    api = TestClient(client.app)
    headers = {"Authorization": f"Bearer {secret}"}
    created = api.post("/admin/users", data={"email": "script@example.com", "name": "From Script"},
                       headers=headers, follow_redirects=False)
    assert created.status_code == 303
    with database.session() as session:
        assert session.scalar(sa.select(User.id).where(User.email == "script@example.com")) is not None
        session.get(type(token), token.id).revoked_at = utcnow()  # type: ignore[union-attr]
    refused = api.get("/admin/users", headers={**headers, "Accept": "application/json"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"] == "Bearer"


def test_writes_without_the_csrf_token_are_refused(client: TestClient, people, database: Database) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    attempts = [
        client.post("/admin/users", data={"email": "x@example.com", "name": "X"}),
        client.post("/admin/users", data={"email": "x@example.com", "name": "X", "csrf_token": "forged.value"}),
        client.post("/admin/users", data={"email": "x@example.com", "name": "X"},
                    headers={"X-CSRF-Token": csrf_token(client) + "x"}),
        client.post("/admin/users", json={"email": "x@example.com", "name": "X"}),
    ]
    assert [r.status_code for r in attempts] == [403] * 4
    assert "Reload the page" in attempts[0].text
    with database.session() as session:
        assert session.scalar(sa.select(User.id).where(User.email == "x@example.com")) is None
    # The htmx header works as well as the hidden field.
    accepted = client.post("/admin/users", data={"email": "x@example.com", "name": "X"},
                           headers={"X-CSRF-Token": csrf_token(client)}, follow_redirects=False)
    assert accepted.status_code == 303


def test_sign_in_form_is_accessible(client: TestClient) -> None:
    html = client.get("/login").text
    assert '<label for="email">Email</label>' in html and '<label for="password">Password</label>' in html
    # The hidden field must carry the token (masked for this page): a form posted without JavaScript relies on it.
    field = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert field and unmask(field.group(1)) == client.cookies["gh_csrf"]
    failed = client.post("/login", data={"email": "", "password": "", "csrf_token": csrf_token(client)})
    assert failed.status_code == 422
    assert 'aria-invalid="true"' in failed.text and 'aria-describedby="email-error"' in failed.text


def test_next_cannot_leave_the_site(client: TestClient, people) -> None:  # type: ignore[no-untyped-def]
    for hostile in ("https://evil.example", "//evil.example", "/\\evil.example"):
        response = post_form(client, "/login", {"email": "member@example.com", "password": PASSWORD, "next": hostile})
        assert response.headers["location"] == "/"


def test_passwords_are_hashed_at_the_recommended_cost_and_light_hashes_are_upgraded_at_sign_in(  # type: ignore[no-untyped-def]
        client: TestClient, people, database: Database) -> None:
    """The suite hashes its people's passwords at a light cost (conftest.py); a real
    deployment hashes at argon2-cffi's recommended one, and a sign-in upgrades any older,
    weaker hash on the spot."""
    from argon2 import extract_parameters
    from argon2.profiles import get_default_parameters

    from webapp.core import passwords

    with database.session() as session:
        light = session.scalars(sa.select(User.password_hash).where(User.email == "member@example.com")).one()
    assert extract_parameters(light).memory_cost == 1024  # type: ignore[arg-type]
    passwords.use_cost("recommended")
    try:
        sign_in(client, "member@example.com")
        with database.session() as session:
            upgraded = session.scalars(sa.select(User.password_hash).where(User.email == "member@example.com")).one()
        assert upgraded != light and extract_parameters(upgraded) == get_default_parameters()  # type: ignore[arg-type]
    finally:
        passwords.use_cost("light")
