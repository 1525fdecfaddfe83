"""A browser's side of the web app in tests: signing in, the CSRF token, plain form posts."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session
from starlette.testclient import TestClient

from webapp.core.db import Database
from webapp.core.models import ApiToken, User, utcnow
from webapp.services import identity, tokens
from webapp.web.csrf import SESSION_COOKIE, unmask

PASSWORD = "correct horse battery staple"  # every person the `people` fixture makes
TEST_SECRET = "test-secret-key-that-is-long-enough-0123456789"


def csrf_token(client: TestClient) -> str:
    """The CSRF token the browser holds (fetching a page first if it has none yet)."""
    if "gh_csrf" not in client.cookies:
        client.get("/login")
    return client.cookies["gh_csrf"]


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> None:
    response = client.post("/login", data={"email": email, "password": password, "csrf_token": csrf_token(client)},
                           follow_redirects=False)
    assert response.status_code == 303, response.text
    assert "gh_session" in client.cookies


def as_role(client: TestClient, database: Database, people: dict[str, Any], role: str | None) -> None:
    """A fresh session for `role` (None: signed out), opened directly to skip password hashing."""
    client.cookies.clear()
    client.get("/login")  # the CSRF cookie
    if role is None:
        return
    with database.session() as session:
        token = identity.open_session(session, people[role], ip="testclient", user_agent="matrix", now=utcnow())
    client.cookies.set(SESSION_COOKIE, token)


def post_form(client: TestClient, url: str, data: dict[str, object] | None = None, **kwargs: object):  # type: ignore[no-untyped-def]
    """A plain HTML form post, as a browser without JavaScript sends it."""
    return client.post(url, data={**(data or {}), "csrf_token": csrf_token(client)},
                       follow_redirects=False, **kwargs)  # type: ignore[arg-type]


def concrete(path: str, ids: dict[str, int]) -> str:
    """A route's path with its parameters filled in from `ids`."""
    return re.sub(r"\{(\w+)(:\w+)?\}", lambda m: str(ids[m.group(1)]), path)


def unmasked(html: str) -> str:
    """The page with its CSRF tokens shown as the cookie holds them: pages carry the token
    under a mask that changes with every response (webapp.web.csrf)."""
    def shown(match: re.Match[str]) -> str:
        return f'{match.group(1)}{unmask(match.group(2)) or match.group(2)}"'

    html = re.sub(r'(name="csrf_token" value=")([A-Za-z0-9_-]+)"', shown, html)
    return re.sub(r'("X-CSRF-Token": ")([A-Za-z0-9_-]+)"', shown, html)


def personal_token(session: Session, user: User, *, name: str = "test", scopes: list[str] | None = None,
                   days: int = 30) -> tuple[ApiToken, str]:
    """A token `user` issued for themself (tokens are personal), with every scope they may
    hold unless `scopes` says fewer; the row and the secret."""
    return tokens.issue_token(session, user=user, issued_by=identity.principal_of(user), now=utcnow(), name=name,
                              scopes=scopes, days=days)
