"""Times as people read them (issue 15, item 5): relative, in the viewer's own zone, exact on
hover, never wrapped; the zone is the person's setting, else their browser's, else UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from support.access import make_resource, submit
from support.web import post_form, sign_in
from webapp.core.db import Database
from webapp.core.models import AuditEvent, User
from webapp.web.times import TZ_COOKIE, relative, when, zone

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("offset, said", [
    (timedelta(seconds=-10), "just now"),
    (timedelta(seconds=20), "in under a minute"),
    (timedelta(minutes=-3), "3 min ago"),
    (timedelta(minutes=59), "in 59 min"),
    (timedelta(minutes=59, seconds=40), "in 1 h"),
    (timedelta(hours=23, minutes=40), "in 1 day"),
    (timedelta(hours=-3, minutes=-10), "3 h ago"),
    (timedelta(days=2, hours=1), "in 2 days"),
    (timedelta(days=-1), "1 day ago"),
    (timedelta(days=-45), "17 Oct 2026"),
])
def test_relative_times(offset: timedelta, said: str) -> None:
    assert relative(NOW + offset, NOW) == said


def test_a_time_element_carries_the_exact_local_time() -> None:
    html = when(NOW - timedelta(hours=3), zone("Asia/Tokyo"), now=NOW)
    assert html == ('<time datetime="2026-12-01T09:00:00+00:00" title="Tue 1 Dec 2026, 18:00:00 JST" '
                    'class="ago">3 h ago</time>')
    assert "Tue 1 Dec 2026, 18:00 JST (3 h ago)" in when(NOW - timedelta(hours=3), zone("Asia/Tokyo"), style="both",
                                                         now=NOW)
    assert when(None, zone(None), empty="never") == "never"
    assert zone("Mars/Olympus_Mons") == zone("UTC") == zone("") and zone("../../etc/passwd") == zone(None)


def zone_shown(client: TestClient, path: str) -> str:
    """The zone abbreviation in the first exact time of the page's main content."""
    main = client.get(path).text.split('<main', 1)[1]
    return re.search(r'<time datetime="[^"]+" title="[^"]+ ([A-Z][A-Za-z0-9+-]+)"', main)[1]  # type: ignore[index]


def test_pages_show_times_in_the_setting_else_the_browser_zone_else_utc(
        client: TestClient, database: Database, people: dict[str, Any]) -> None:
    sign_in(client, "member@example.com")
    request_id = submit(client, make_resource(database, people))
    path = f"/requests/{request_id}"
    assert zone_shown(client, path) == "UTC"
    client.cookies.set(TZ_COOKIE, "America%2FNew_York")  # what static/app.js sends: percent-encoded
    assert zone_shown(client, path) == "EST"
    client.cookies.set(TZ_COOKIE, "Asia/Tokyo")
    assert zone_shown(client, path) == "JST"
    client.cookies.set(TZ_COOKIE, "Nowhere/Special")
    assert zone_shown(client, path) == "UTC", "an unknown zone is ignored"

    client.cookies.set(TZ_COOKIE, "America/New_York")
    saved = post_form(client, "/account", {"time_zone": "Asia/Kolkata"})
    assert saved.status_code == 303 and saved.headers["location"] == "/account"
    assert zone_shown(client, path) == "IST", "the person's setting wins over the browser"
    with database.session() as session:
        assert session.get(User, people["member"].id).time_zone == "Asia/Kolkata"  # type: ignore[union-attr]
        assert session.query(AuditEvent).filter_by(action="user.settings_changed").count() == 1


@pytest.mark.parametrize("value", ["Mars/Olympus_Mons", "UTC\x00", "x" * 65, "Europe/../../etc"])
def test_an_unknown_zone_is_refused_and_changes_nothing(client: TestClient, database: Database,
                                                        people: dict[str, Any], value: str) -> None:
    sign_in(client, "member@example.com")
    answer = post_form(client, "/account", {"time_zone": value})
    assert answer.status_code == 422
    if "\x00" not in value:
        assert "Choose a time zone from the list." in answer.text or "at most 64" in answer.text
    answer = client.post("/account", data={"time_zone": value}, headers={
        "accept": "application/json", "x-csrf-token": client.cookies["gh_csrf"]})
    assert answer.status_code == 422 and "time_zone" in answer.json()["fields"]
    with database.session() as session:
        assert session.get(User, people["member"].id).time_zone == ""  # type: ignore[union-attr]
