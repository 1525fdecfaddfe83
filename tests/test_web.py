"""The web shell: pages and fragments from one template, errors in the client's
language, and the headers every response carries."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from support.web import sign_in, unmasked
from webapp.core.db import Database
from webapp.services.demo import DEMO_PASSWORD, seed_demo


def seed(database: Database, client: TestClient) -> None:
    """The demo organisation, viewed by one of its members."""
    with database.session() as session:
        seed_demo(session)
    sign_in(client, "jamal.carter@example.com", DEMO_PASSWORD)


def without_form_key(html: str) -> str:
    """The page without what is fresh in every rendering: the request form's one-time key,
    and the CSRF token's mask."""
    return re.sub(r'name="form_key" value="[0-9a-f]+"', 'name="form_key" value=""', unmasked(html))


def test_home_page_shows_the_demo_organisation(client: TestClient, database: Database) -> None:
    seed(database, client)
    response = client.get("/")
    assert response.status_code == 200
    html = response.text
    assert html.startswith("<!doctype html>")
    assert '<section id="counters"' in html and 'counter-label">pending requests</span>' in html
    assert 'id="request-row-' in html and 'id="request-form"' in html  # the table and the request form
    assert '<a class="skip-link" href="#main">' in html
    assert 'aria-live="polite"' in html
    assert "/static/vendor/htmx-2.0.11.min.js" in html and "/static/vendor/sse-2.2.4.min.js" in html
    assert response.headers["vary"].startswith("HX-Request")


def test_htmx_gets_only_the_fragment(client: TestClient, database: Database) -> None:
    seed(database, client)
    page = client.get("/")
    fragment = client.get("/", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert fragment.text.lstrip().startswith('<section id="overview"')
    assert "<html" not in fragment.text
    # Equal but for the request form's one-time key, fresh in every rendering.
    assert without_form_key(fragment.text).strip() in without_form_key(page.text)
    # curl can ask for the same fragment without htmx.
    assert without_form_key(client.get("/?fragment=1").text) == without_form_key(fragment.text)


def test_empty_database_says_how_to_get_demo_data(client: TestClient, people) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    assert "webapp seed-demo" in client.get("/").text


def test_security_headers_on_every_response(client: TestClient) -> None:
    for path in ("/", "/login", "/healthz", "/static/app.css", "/missing"):
        headers = client.get(path).headers
        csp = headers["content-security-policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        assert "frame-ancestors 'none'" in csp
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "same-origin"


def test_request_id_is_returned_and_kept_when_safe(client: TestClient) -> None:
    assert len(client.get("/healthz").headers["x-request-id"]) == 16
    assert client.get("/healthz", headers={"X-Request-ID": "abc-123"}).headers["x-request-id"] == "abc-123"
    hostile = client.get("/healthz", headers={"X-Request-ID": "<script>"}).headers["x-request-id"]
    assert hostile != "<script>"


def test_not_found_speaks_html_htmx_and_json(client: TestClient) -> None:
    page = client.get("/nowhere")
    assert page.status_code == 404 and "<h1>Not found</h1>" in page.text

    fragment = client.get("/nowhere", headers={"HX-Request": "true"})
    assert fragment.status_code == 404
    assert 'role="alert"' in fragment.text and "<html" not in fragment.text
    assert fragment.headers["hx-retarget"] == "#toasts"

    api = client.get("/nowhere", headers={"Accept": "application/json"})
    assert api.status_code == 404 and api.json() == {"error": "Not Found", "status": 404}


def test_wrong_method_is_405(client: TestClient) -> None:
    response = client.post("/healthz", headers={"Accept": "application/json"})
    assert response.status_code == 405
    assert response.json()["status"] == 405


def test_oversized_bodies_are_refused(client: TestClient) -> None:
    response = client.post("/", content=b"x" * (1024 * 1024 + 1))
    assert response.status_code == 413
