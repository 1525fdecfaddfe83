"""Cross-site request forgery (webapp.web.csrf): tokens bound to the session, masked per
page, the browser's Origin and Sec-Fetch-Site believed, and private pages never cached."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from support.web import sign_in
from webapp.web.csrf import unmask


def new_user(client: TestClient, token: str, **headers: str) -> int:
    return client.post("/admin/users", data={"email": "x@example.com", "name": "X", "csrf_token": token},
                       headers=headers, follow_redirects=False).status_code


def test_a_token_from_another_session_is_refused(app, people: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as mine:
        theirs = TestClient(app)
        sign_in(mine, "admin@example.com")
        sign_in(theirs, "approver@example.com")
        their_pair = theirs.cookies["gh_csrf"]
        domain = next(c.domain for c in mine.cookies.jar if c.name == "gh_csrf")
        mine.cookies.set("gh_csrf", their_pair, domain=domain)  # a valid pair, but another session's
        assert new_user(mine, their_pair) == 403
        assert mine.cookies["gh_csrf"] != their_pair, "a fresh token bound to this session replaced it"
        assert new_user(mine, mine.cookies["gh_csrf"]) == 303


def test_requests_from_another_site_are_refused_whatever_they_carry(client: TestClient, people: dict[str, Any]) -> None:
    sign_in(client, "admin@example.com")
    token = client.cookies["gh_csrf"]
    assert new_user(client, token, origin="http://evil.example") == 403
    assert new_user(client, token, **{"sec-fetch-site": "cross-site"}) == 403
    assert new_user(client, token, **{"sec-fetch-site": "same-site"}) == 403
    assert new_user(client, token, origin="http://testserver", **{"sec-fetch-site": "same-origin"}) == 303


def test_pages_carry_the_token_masked_afresh_each_time(client: TestClient, people: dict[str, Any]) -> None:
    sign_in(client, "admin@example.com")
    cookie = client.cookies["gh_csrf"]
    first, second = (client.get("/admin/users").text for _ in range(2))
    masked = [re.search(r'name="csrf_token" value="([^"]+)"', page).group(1) for page in (first, second)]  # type: ignore[union-attr]
    assert masked[0] != masked[1] and cookie not in first and cookie not in second
    assert [unmask(m) for m in masked] == [cookie, cookie]
    assert new_user(client, masked[0]) == 303, "a masked token is accepted"


def test_private_answers_are_never_cached_and_vary_by_accept(client: TestClient, people: dict[str, Any]) -> None:
    sign_in(client, "member@example.com")
    for response in (client.get("/"), client.get("/my/access", headers={"Accept": "application/json"}),
                     client.get("/requests", headers={"HX-Request": "true"})):
        assert response.headers["cache-control"] == "no-store"
        vary = {v.strip() for v in response.headers["vary"].split(",")}
        assert "Accept" in vary
    assert "HX-Request" in client.get("/requests").headers["vary"]
    assert "no-store" not in client.get("/static/app.css").headers.get("cache-control", "")
