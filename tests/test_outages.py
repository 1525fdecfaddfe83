"""A database that cannot be reached is an outage (503 with Retry-After, for pages, htmx and
JSON alike), not a bug (500): a load balancer and a script both know to come back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from support.web import sign_in
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database
from webapp.web import home


@pytest.fixture
def signed_in(settings: Settings, people: dict[str, Any]) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        sign_in(client, "member@example.com")
        yield client


def test_an_unreachable_database_answers_503_with_retry_after(signed_in: TestClient) -> None:
    app: Any = signed_in.app
    healthy = app.state.db
    app.state.db = Database("postgresql://postgres@127.0.0.1:1/down")  # nothing listens: the server is down
    try:
        page = signed_in.get("/")
        fragment = signed_in.get("/requests", headers={"HX-Request": "true"})
        api = signed_in.get("/my/access", headers={"Accept": "application/json"})
    finally:
        app.state.db.dispose()
        app.state.db = healthy
    for response in (page, fragment, api):
        assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text[:200]
    assert "try again in a few seconds" in page.text and "<html" in page.text
    assert fragment.headers["hx-retarget"] == "#toasts" and "<html" not in fragment.text
    assert api.json() == {"error": "The database is not answering right now; try again in a few seconds.",
                          "status": 503}
    assert signed_in.get("/").status_code == 200, "back once the database is"


def test_a_bug_is_still_a_500(signed_in: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(home, "load_counters", broken)
    response = signed_in.get("/dashboard/counters", headers={"Accept": "application/json"})
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert response.json()["error"] == "The server hit an error; it has been logged."
