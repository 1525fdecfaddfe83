"""Issue 15, items 3, 6 and 7 in two browsers: the approver's queue can be acted on (inline,
several at once, by keyboard), every decision says what it did and takes the focus there, the
live toasts can be closed (successes go by themselves), and the requester reads why they
were rejected. With JavaScript and without."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from playwright.sync_api import expect

from e2e.conftest import add_resources
from support.browser import LiveServer, Watched, post_and_follow, send_request, sign_in
from webapp.core.db import Database
from webapp.core.models import User

OpenPage = Callable[..., Watched]
REASON = "Checking the nightly backups of the staging database."
LIVE_MS = 10_000
RESOURCES = ("staging-db", "billing-db", "metrics-db")  # one pending request per person and resource


@pytest.fixture
def server(serve: Any, database: Database, people: dict[str, User]) -> LiveServer:
    """The app with three resources that Arlo Approver approves (and admins may decide)."""
    add_resources(database, people, *RESOURCES)
    return serve()  # type: ignore[no-any-return]


def signed_in(server: LiveServer, open_page: OpenPage, email: str, path: str, *, javascript: bool = True) -> Watched:
    window = open_page(server, javascript=javascript)
    sign_in(window, email)
    window.goto(path)
    return window


def test_the_queue_fills_live_and_is_decided_by_keyboard(server: LiveServer, open_page: OpenPage) -> None:
    approver = signed_in(server, open_page, "approver@example.com", "/approvals")
    count = approver.page.locator("#pending-count")
    expect(count).to_have_text("0 waiting")
    member = signed_in(server, open_page, "member@example.com", "/my/requests")

    first = send_request(member, "staging-db", REASON)
    expect(member.page.locator("#flash")).to_contain_text(f"Request #{first} sent.")
    expect(member.page.locator("#flash")).to_be_focused()
    second = send_request(member, "billing-db", "Restoring last week's snapshot for the audit.")
    member.goto("/my/requests")  # where the answers will arrive

    # Loaded empty, the queue now holds both, oldest first, reasons in full, and the count says so.
    rows = approver.page.locator("#approvals tbody tr[id^='request-row-']")
    expect(rows).to_have_count(2, timeout=LIVE_MS)
    expect(rows.first).to_have_id(f"request-row-{first}")
    expect(rows.first).to_contain_text(REASON)
    expect(count).to_have_text("2 waiting", timeout=LIVE_MS)
    expect(approver.page.locator("#shortcut-help")).to_contain_text("j and k move between requests")

    # Keyboard only: j to the first request, a approves it; the page comes back with the message focused.
    expect(approver.page.locator("#shortcut-help")).to_be_visible()  # shown once the shortcuts work
    approver.page.keyboard.press("j")
    expect(rows.first).to_be_focused()
    approver.page.keyboard.press("a")
    flash = approver.page.locator("#flash")
    expect(flash).to_contain_text(f"Request #{first} approved.")
    expect(flash).to_be_focused()
    assert approver.path == "/approvals"
    expect(flash.get_by_role("link", name=f"Open request #{first}")).to_be_visible()
    expect(count).to_have_text("1 waiting")

    # r goes to the reason of the (now first) request; Enter rejects it with that reason.
    expect(approver.page.locator("#shortcut-help")).to_be_visible()  # this page's shortcuts are ready
    approver.page.keyboard.press("j")
    approver.page.keyboard.press("r")
    expect(approver.page.get_by_label(f"Reason for rejecting request #{second}")).to_be_focused()
    approver.page.keyboard.type("Snapshots are restored by the DBA team.")
    approver.page.keyboard.press("Enter")
    expect(flash).to_contain_text(f"Request #{second} rejected.")
    expect(count).to_have_text("0 waiting")

    # The member heard both, live: the approval as a success (which would leave by itself after
    # 8 s; closed by hand here), the rejection with its reason, as an error that stays.
    toasts = member.page.locator("#toasts")
    expect(toasts).to_contain_text("Snapshots are restored by the DBA team.", timeout=LIVE_MS)
    rejected = toasts.locator(".toast-error")
    expect(rejected.get_by_role("link", name="View the request")).to_have_attribute("href", f"/requests/{second}")
    approved = toasts.locator(".toast-ok", has_text=f"Request #{first} for staging-db was approved")
    expect(approved).to_have_count(1, timeout=LIVE_MS)
    approved.get_by_role("button", name="Dismiss this message").click()
    expect(approved).to_have_count(0)
    member.page.wait_for_timeout(1200)
    expect(rejected).to_have_count(1)  # errors stay until closed
    rejected.get_by_role("button", name="Dismiss this message").click()
    expect(rejected).to_have_count(0)

    # My requests says why, without a reload; and the Requester column (always me) is gone.
    mine = member.page.locator(f"#request-row-{second}")
    expect(mine).to_contain_text("Why: Snapshots are restored by the DBA team.")
    expect(member.page.get_by_role("columnheader", name="Requester")).to_be_hidden()
    member.assert_clean()
    approver.assert_clean()


def test_a_success_toast_leaves_by_itself(server: LiveServer, open_page: OpenPage) -> None:
    member = signed_in(server, open_page, "member@example.com", "/my/requests")
    member.page.add_init_script("window.gatehouseToastMs = 1500")
    member.page.reload()
    request_id = send_request(member, "staging-db", REASON)
    member.goto("/my/requests")
    approver = signed_in(server, open_page, "approver@example.com", "/approvals")
    approver.page.get_by_role("button", name=f"Approve request #{request_id}").click()
    toast = member.page.locator("#toasts .toast-ok", has_text="was approved")
    expect(toast).to_have_count(1, timeout=LIVE_MS)
    expect(toast.locator(":scope > svg.icon")).to_have_count(1)  # a tick: a success
    expect(toast).to_have_count(0, timeout=5_000)  # gone, with nobody touching it
    member.assert_clean()


def test_several_requests_are_decided_at_once_without_javascript(server: LiveServer, open_page: OpenPage) -> None:
    member = signed_in(server, open_page, "member@example.com", "/")
    ids = [send_request(member, name, f"{REASON} Batch {n}.") for n, name in enumerate(RESOURCES)]
    approver = signed_in(server, open_page, "approver@example.com", "/approvals", javascript=False)
    page = approver.page
    expect(page.locator("#pending-count")).to_have_text("3 waiting")

    # Rejecting needs a reason: the browser's own form says so before anything is sent.
    for request_id in ids[:2]:
        page.get_by_label(f"Select request #{request_id}").check()
    page.get_by_label("Reason", exact=True).fill("Use the read replica instead.")
    path = post_and_follow(approver, page.get_by_role("button", name="Reject selected"))
    assert path == "/approvals"
    flash = page.locator("#flash")
    expect(flash).to_contain_text(f"Rejected #{ids[0]}, #{ids[1]}.")
    expect(page.locator("#approvals tbody tr[id^='request-row-']")).to_have_count(1)
    expect(page.locator("#pending-count")).to_have_text("1 waiting")

    # Deciding one that someone else decided meanwhile says so, and decides the rest.
    page.get_by_label(f"Select request #{ids[2]}").check()
    other = signed_in(server, open_page, "admin@example.com", "/approvals")
    other.page.get_by_role("button", name=f"Approve request #{ids[2]}").click()
    expect(other.page.locator("#flash")).to_contain_text(f"Request #{ids[2]} approved.")
    post_and_follow(approver, page.get_by_role("button", name="Approve selected"))
    expect(flash).to_contain_text(f"Not changed: #{ids[2]}")
    expect(flash).to_contain_text("already approved")

    member.goto("/my/requests")
    for request_id in ids[:2]:
        expect(member.page.locator(f"#request-row-{request_id}")).to_contain_text("Why: Use the read replica instead.")
    approver.assert_clean()
