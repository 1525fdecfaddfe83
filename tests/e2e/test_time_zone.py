"""Issue 15, item 5: times are rendered on the server in the viewer's zone, which defaults from
the browser where JavaScript is on (static/app.js sets the `gh_tz` cookie). The browser is asked
at most once an hour (asking costs a long task on a slow phone), so someone who travels is
followed within the hour."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from support.browser import LiveServer, Watched, sign_in

OpenPage = Callable[..., Watched]
TWO_HOURS_MS = 2 * 3600 * 1000


def test_times_follow_the_browsers_zone_asked_at_most_once_an_hour(server: LiveServer, open_page: OpenPage) -> None:
    member = open_page(server, time_zone="Asia/Tokyo")
    sign_in(member, "member@example.com")  # the sign-in page's script has told the server the zone
    page = member.page
    zone_hint = page.locator("#time_zone-hint")

    member.goto("/account")
    expect(zone_hint).to_contain_text("your browser says Asia/Tokyo")
    expect(zone_hint).to_contain_text("JST")

    # The cookie says Paris, as if set before a trip, and the zone was asked a minute ago: the
    # script does not ask again, so the pages stay in Paris time.
    page.context.add_cookies([{"name": "gh_tz", "value": "Europe/Paris", "url": server.url}])
    page.evaluate("() => localStorage.setItem('gh_tz_checked_at', String(Date.now() - 60000))")
    member.goto("/account")
    member.goto("/account")
    expect(zone_hint).to_contain_text("your browser says Europe/Paris")

    # Two hours later, the next page asks the browser again and the one after shows Tokyo time.
    page.evaluate(f"() => localStorage.setItem('gh_tz_checked_at', String(Date.now() - {TWO_HOURS_MS}))")
    member.goto("/account")
    member.goto("/account")
    expect(zone_hint).to_contain_text("your browser says Asia/Tokyo")
    assert not member.errors, member.errors
