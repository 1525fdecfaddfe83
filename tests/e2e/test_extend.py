"""Issue 15, items 8 and 9 in two browsers, with JavaScript and without: asking for something
one holds offers to extend it instead; the extension, once another person approves it, moves
the end of the same grant (My access follows it live where JavaScript runs); a rejected
request can be asked again from My requests, its reason already filled in."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from e2e.conftest import add_resources
from support.browser import LiveServer, Watched, choose_resource, post_and_follow, sign_in
from webapp.core.db import Database
from webapp.core.models import User

OpenPage = Callable[..., Watched]
REASON = "Checking the nightly backups of the staging database."
LIVE_MS = 10_000


@pytest.fixture
def server(serve: Any, database: Database, people: dict[str, User]) -> LiveServer:
    add_resources(database, people, "staging-db", "metrics-db")
    return serve()  # type: ignore[no-any-return]


def send(watched: Watched, javascript: bool, button: str = "Send request") -> None:
    """Submit the request form: htmx puts the request's page in place, or a plain POST goes there."""
    if javascript:
        watched.page.get_by_role("button", name=button).click()
        expect(watched.page.locator("#request-detail h1")).to_be_visible()
    else:
        post_and_follow(watched, watched.page.get_by_role("button", name=button))


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_extend_what_you_hold_and_ask_again_for_what_was_refused(server: LiveServer, open_page: OpenPage,
                                                                javascript: bool) -> None:
    member = open_page(server, javascript=javascript)
    sign_in(member, "member@example.com")
    approver = open_page(server)
    sign_in(approver, "approver@example.com")

    member.goto("/requests/new")
    choose_resource(member, "staging-db")
    member.page.get_by_label("For how long").select_option("1h")
    member.page.get_by_label("Why do you need it?").fill(REASON)
    send(member, javascript)
    first = int(member.path.rsplit("/", 1)[1])
    approver.goto("/approvals")
    approver.page.get_by_role("button", name=f"Approve request #{first}").click()
    expect(approver.page.locator("#flash")).to_contain_text(f"Request #{first} approved.")

    # The picker says what each resource is and what one has of it: held, it cannot be asked for
    # again, and offers to extend it instead.
    member.goto("/requests/new")
    held = member.page.locator(".resource-option", has=member.page.get_by_role("radio", name=re.compile("^staging-db")))
    expect(held).to_contain_text("The staging database.")
    expect(held).to_contain_text("Approved by Arlo Approver, usually within")
    expect(held).to_contain_text("You hold it until")
    expect(held.get_by_role("radio")).to_be_disabled()
    if javascript:  # the list narrows as one types
        member.page.get_by_label("Find a resource").fill("metrics")
        expect(held).to_be_hidden()
        expect(member.page.locator("#resource-q-count")).to_have_text("1 resource matches.")
        member.page.get_by_label("Find a resource").fill("")
    else:  # the search asks the server
        member.page.get_by_label("Find a resource").fill("metrics")
        member.page.get_by_role("button", name="Search").click()
        expect(held).to_have_count(0)
        member.goto("/requests/new")
    held.get_by_role("link", name="Extend it (staging-db)").click()

    # The extension form: the grant's resource, its end, and no "Permanent".
    expect(member.page.locator("#extending")).to_contain_text("Extending your access to staging-db")
    expect(member.page.get_by_label("For how long").locator("option", has_text="Permanent")).to_have_count(0)
    member.page.get_by_label("For how long").select_option("8h")
    member.page.get_by_label("Why do you need it?").fill("The restore test runs into the evening.")
    send(member, javascript)
    extension = int(member.path.rsplit("/", 1)[1])
    expect(member.page.locator("#request-detail")).to_contain_text(f"request #{first}")

    member.goto("/my/access")
    expect(member.page.get_by_role("link", name=f"Extension waiting (#{extension})")).to_be_visible()
    ends = member.page.locator("#my-access tbody tr").first.locator("td").nth(3)
    expect(ends).to_contain_text("in 1 h")

    approver.goto("/approvals")
    approver.page.get_by_role("button", name=f"Approve request #{extension}").click()
    expect(approver.page.locator("#flash")).to_contain_text(f"Request #{extension} approved.")
    if not javascript:
        member.page.reload()
    expect(ends).to_contain_text("in 9 h", timeout=LIVE_MS)  # the same grant, 8 hours later
    expect(member.page.locator("#my-access tbody tr")).to_have_count(1)
    expect(member.page.get_by_role("link", name="Extend staging-db")).to_be_visible()

    # A rejected request can be asked again, as it was.
    member.goto("/requests/new")
    choose_resource(member, "metrics-db")
    member.page.get_by_label("Why do you need it?").fill("Dashboards for the on-call rotation.")
    send(member, javascript)
    rejected = int(member.path.rsplit("/", 1)[1])
    approver.goto("/approvals")
    approver.page.get_by_label(f"Reason for rejecting request #{rejected}").fill("Use the shared dashboards.")
    approver.page.get_by_role("button", name=f"Reject request #{rejected}").click()
    expect(approver.page.locator("#flash")).to_contain_text(f"Request #{rejected} rejected.")
    member.goto("/my/requests")
    row = member.page.locator(f"#request-row-{rejected}")
    expect(row).to_contain_text("Why: Use the shared dashboards.")
    row.get_by_role("link", name=f"Request again (like #{rejected})").click()
    expect(member.page.get_by_label("Why do you need it?")).to_have_value("Dashboards for the on-call rotation.")
    member.assert_clean()
    approver.assert_clean()
