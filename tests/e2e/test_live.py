"""The live dashboard in two browsers: the approver's dashboard shows a new request (row on
top, toast) the moment the member sends it; the member's dashboard shows the approval (row
status, counters, toast) the moment the approver decides. Neither page reloads."""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from playwright.sync_api import expect

from support.browser import LiveServer, Watched, send_request, sign_in
from webapp.core.db import Database
from webapp.core.models import Resource

OpenPage = Callable[..., Watched]
REASON = "Checking the nightly backups of the staging database."
LIVE_MS = 10_000


def mark(watched: Watched) -> None:
    """Leave a value on the page that any reload would wipe out."""
    watched.page.evaluate("window.notReloaded = true")


def not_reloaded(watched: Watched) -> bool:
    return watched.page.evaluate("window.notReloaded === true") is True


def signed_in(server: LiveServer, open_page: OpenPage, email: str, path: str) -> Watched:
    """A new window, signed in as `email`, on `path`."""
    window = open_page(server)
    sign_in(window, email)
    window.goto(path)
    return window


def test_a_request_and_its_approval_reach_the_other_dashboard_live(server: LiveServer, open_page: OpenPage) -> None:
    approver = signed_in(server, open_page, "approver@example.com", "/")
    mark(approver)
    member = signed_in(server, open_page, "member@example.com", "/")
    pending_before = member.page.locator("#counters .counter-value").first.inner_text()

    request_id = send_request(member, "staging-db", REASON)
    member.goto("/")
    mark(member)
    expect(member.page.locator("#counters .counter-value").first).not_to_have_text(pending_before)

    # The approver's dashboard, loaded before the request existed, now has it on top.
    row = approver.page.locator(f"#request-row-{request_id}")
    expect(row).to_contain_text("requested", timeout=LIVE_MS)
    expect(approver.page.locator("#requests-table tbody tr").first).to_have_id(f"request-row-{request_id}")
    expect(approver.page.locator("#toasts")).to_contain_text(f"New request #{request_id}", timeout=LIVE_MS)
    assert not_reloaded(approver)

    row.get_by_role("button", name=f"Approve request #{request_id}").click()  # a plain form: back to this page
    expect(approver.page.locator("#flash")).to_contain_text(f"Request #{request_id} approved.")
    expect(approver.page.locator("#flash")).to_be_focused()

    member_row = member.page.locator(f"#request-row-{request_id}")
    expect(member_row).to_contain_text("approved", timeout=LIVE_MS)
    expect(member_row).to_have_class(re.compile(r"\bstatus-approved\b"))
    expect(member_row.get_by_role("button")).to_have_count(0)  # nothing left to cancel
    expect(member.page.locator("#toasts")).to_contain_text(f"Request #{request_id} for staging-db was approved",
                                                           timeout=LIVE_MS)
    expect(member.page.locator("#counters .counter-value").first).to_have_text(pending_before, timeout=LIVE_MS)
    assert not_reloaded(member)
    member.assert_clean()
    approver.assert_clean()


def test_waiting_for_my_approval_and_my_requests_follow_along(server: LiveServer, open_page: OpenPage) -> None:
    approver = signed_in(server, open_page, "approver@example.com", "/approvals")
    mark(approver)
    member = signed_in(server, open_page, "member@example.com", "/my/requests")
    mark(member)

    other_window = signed_in(server, open_page, "member@example.com", "/")  # the member, in another window
    request_id = send_request(other_window, "staging-db", REASON)

    waiting = approver.page.locator(f"#request-row-{request_id}")
    expect(waiting).to_contain_text("requested", timeout=LIVE_MS)
    mine = member.page.locator(f"#request-row-{request_id}")
    expect(mine).to_contain_text("requested", timeout=LIVE_MS)

    decider = signed_in(server, open_page, "approver@example.com", f"/requests/{request_id}")
    decider.page.get_by_role("button", name="Approve").first.click()
    expect(mine).to_contain_text("approved", timeout=LIVE_MS)
    expect(waiting).to_contain_text("approved", timeout=LIVE_MS)  # decided by someone else: it says so
    expect(waiting.get_by_role("button")).to_have_count(0)  # and offers nothing left to do
    assert not_reloaded(approver) and not_reloaded(member)
    member.assert_clean()
    approver.assert_clean()


def test_my_access_and_the_resource_access_follow_a_revoke_made_by_an_admin(
        server: LiveServer, open_page: OpenPage, database: Database) -> None:
    """Issue 15, item 2: the toast said the access ended while My access still showed it. The
    resource's "who has access now" page, open in another admin's window, follows too."""
    member = signed_in(server, open_page, "member@example.com", "/")
    request_id = send_request(member, "staging-db", REASON)
    approver = signed_in(server, open_page, "approver@example.com", f"/requests/{request_id}")
    approver.page.get_by_role("button", name="Approve").first.click()
    expect(approver.page.locator("#request-detail h1 .badge")).to_have_text("approved")
    member.goto("/my/access")
    mark(member)
    expect(member.page.locator("#my-access")).to_contain_text("staging-db")
    with database.session() as session:
        resource_id = session.scalar(sa.select(Resource.id).where(Resource.name == "staging-db"))
    watcher = signed_in(server, open_page, "admin@example.com", f"/admin/resources/{resource_id}/access")
    mark(watcher)
    holder = watcher.page.locator("#access-at-table tbody tr", has_text="Mo Member")
    expect(holder).to_contain_text("still active")

    admin = signed_in(server, open_page, "admin@example.com", f"/requests/{request_id}")
    admin.page.get_by_text("Revoke access…").click()  # the confirmation opens
    admin.page.get_by_label("Why revoke now?").fill("Project finished")
    admin.page.get_by_role("button", name="Revoke").click()
    expect(member.page.locator("#my-access")).to_contain_text("You hold no access right now", timeout=LIVE_MS)
    expect(watcher.page.locator("#access-at-table")).to_contain_text("Nobody had access", timeout=LIVE_MS)
    assert not_reloaded(member) and not_reloaded(watcher)
    member.assert_clean()
    watcher.assert_clean()
