"""What people do, in a real browser against the real server: ask for access and have it
approved (with JavaScript, and without: plain forms that post and redirect with 303), fix a
form the server refused, and skip to the content with the keyboard. Every page must leave the
console clean (no CSP violations, no JavaScript errors).
"""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from support.browser import LiveServer, Watched, choose_resource, expected_status, post, post_and_follow, sign_in
from webapp.core.db import Database
from webapp.core.models import User
from webapp.services.catalog import ResourceChanges, save_resource

REASON = "Rotating the staging database credentials this afternoon."
OpenPage = Callable[..., Watched]


def status_badge(watched: Watched) -> str:
    return watched.page.locator("#request-detail h1 .badge").inner_text()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_member_asks_and_an_approver_approves(server: LiveServer, open_page: OpenPage, javascript: bool) -> None:
    member = open_page(server, javascript=javascript)
    sign_in(member, "member@example.com")
    member.goto("/requests/new")
    choose_resource(member, "staging-db")
    member.page.get_by_label("For how long").select_option(label="7 days")
    member.page.get_by_label("Why do you need it?").fill(REASON)
    if javascript:  # htmx posts the form and shows the request in its place
        member.page.get_by_role("button", name="Send request").click()
        heading = member.page.locator("#request-detail h1")
        expect(heading).to_contain_text("staging-db")
        request_id = int(re.search(r"#(\d+)", heading.inner_text())[1])  # type: ignore[index]
        member.goto(f"/requests/{request_id}")
    else:
        path = post_and_follow(member, member.page.get_by_role("button", name="Send request"))
        match = re.fullmatch(r"/requests/(\d+)", path)
        assert match, path
        request_id = int(match[1])
    assert status_badge(member) == "requested"
    expect(member.page.locator("#request-detail")).to_contain_text(REASON)

    approver = open_page(server, javascript=javascript)
    sign_in(approver, "approver@example.com")
    approver.goto("/approvals")
    approver.page.locator(f"#request-row-{request_id}").get_by_role("link").click()
    approver.page.wait_for_url(f"**/requests/{request_id}")
    approver.page.get_by_label("Comment (optional)").fill("Fine for a week.")
    if javascript:  # the decision forms are boosted: htmx swaps in the page it redirects to
        approver.page.get_by_role("button", name="Approve").click()
        expect(approver.page.locator("#request-detail h1 .badge")).to_have_text("approved")
    else:
        post_and_follow(approver, approver.page.get_by_role("button", name="Approve"))
        assert status_badge(approver) == "approved"
    assert approver.path == f"/requests/{request_id}"
    expect(approver.page.locator("#request-detail")).to_contain_text("Fine for a week.")

    member.page.reload()
    assert status_badge(member) == "approved"
    expect(member.page.get_by_role("heading", name="Grant")).to_be_visible()
    member.goto("/my/access")
    expect(member.page.get_by_role("link", name="staging-db", exact=True)).to_be_visible()

    member.assert_clean()
    approver.assert_clean()


@pytest.mark.parametrize("javascript", [True, False], ids=["js", "no-js"])
def test_a_refused_form_says_why_at_the_field(server: LiveServer, open_page: OpenPage, javascript: bool) -> None:
    member = open_page(server, javascript=javascript)
    sign_in(member, "member@example.com")
    member.goto("/requests/new")
    page = member.page
    choose_resource(member, "staging-db")
    page.get_by_label("Why do you need it?").fill("too short")
    if javascript:
        page.get_by_role("button", name="Send request").click()
        page.locator("#reason-error").wait_for()
        assert member.path == "/requests/new"
    else:
        assert post(member, page.get_by_role("button", name="Send request")).status == 422
        page.locator("#reason-error").wait_for()

    reason = page.get_by_label("Why do you need it?")
    expect(reason).to_have_attribute("aria-invalid", "true")
    expect(reason).to_have_value("too short")  # what was typed is kept
    described_by = (reason.get_attribute("aria-describedby") or "").split()
    assert "reason-error" in described_by
    error = page.locator("#reason-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("10")  # says what is wrong: at least 10 characters
    expect(reason).to_have_accessible_description(re.compile(re.escape(error.inner_text())))
    # Focus goes to the field to fix (the first invalid one), and the keyboard reaches it.
    expect(reason).to_be_focused()
    page.keyboard.press("Shift+Tab")
    expect(reason).not_to_be_focused()
    page.keyboard.press("Tab")
    expect(reason).to_be_focused()

    # Fixing it and sending again works, with the same form (its key survives the error).
    reason.fill(REASON)
    if javascript:
        page.get_by_role("button", name="Send request").click()
        expect(page.locator("#request-detail h1 .badge")).to_have_text("requested")
    else:
        path = post_and_follow(member, page.get_by_role("button", name="Send request"))
        assert re.fullmatch(r"/requests/\d+", path), path
    member.assert_clean(allow=(expected_status(422),))


def test_the_skip_link_moves_focus_to_main(serve, open_page: OpenPage) -> None:  # type: ignore[no-untyped-def]
    server = serve()
    for javascript in (True, False):
        visitor = open_page(server, javascript=javascript)
        visitor.goto("/login")
        page = visitor.page
        page.keyboard.press("Tab")
        skip = page.get_by_role("link", name="Skip to main content")
        expect(skip).to_be_focused()
        expect(skip).to_be_visible()  # shown when focused, not only to screen readers
        page.keyboard.press("Enter")
        expect(page.locator("main")).to_be_focused()
        page.keyboard.press("Tab")  # the next stop is inside main, past the header's links
        expect(page.get_by_label("Email")).to_be_focused()
        visitor.assert_clean()


def test_issuing_a_token_keeps_the_address(server: LiveServer, open_page: OpenPage) -> None:
    """The secret is shown once, on the answer to a POST; the address bar must still name the
    tokens page (a reload of the POST would answer 405), and the form is usable by keyboard
    and screen reader (axe-clean, with the refused field focused)."""
    member = open_page(server)
    sign_in(member, "member@example.com")
    member.page.get_by_role("link", name="Settings").click()
    member.page.get_by_role("link", name="Your API tokens").click()
    expect(member.page.get_by_role("heading", level=1)).to_have_text("Your API tokens")
    member.page.get_by_label("Token name").fill("nightly sync")
    member.page.get_by_label("Expires after (days)").fill("400")
    member.page.get_by_role("button", name="Issue token").click()
    expect(member.page.get_by_label("Expires after (days)")).to_be_focused()
    member.page.get_by_label("Expires after (days)").fill("30")
    member.page.get_by_role("checkbox", name="decide").check()
    member.page.get_by_role("button", name="Issue token").click()
    expect(member.page.get_by_label("Token", exact=True)).to_have_value(re.compile(r"gh_.{20,}"))
    assert member.path == "/account/tokens"
    member.page.reload()
    expect(member.page.get_by_role("cell", name="nightly sync", exact=True)).to_be_visible()
    expect(member.page.get_by_role("cell", name="decide, read", exact=True)).to_be_visible()
    member.assert_clean(allow=(expected_status(422),))


def test_after_sending_with_javascript_the_address_is_the_request(server: LiveServer, open_page: OpenPage) -> None:
    member = open_page(server)
    sign_in(member, "member@example.com")
    member.goto("/requests/new")
    choose_resource(member, "staging-db")
    member.page.get_by_label("Why do you need it?").fill(REASON)
    member.page.get_by_role("button", name="Send request").click()
    expect(member.page.locator("#request-detail")).to_be_visible()
    expect(member.page).to_have_url(re.compile(r"/requests/\d+$"), timeout=2_000)


def test_a_decision_that_lost_a_race_answers_with_a_toast(serve, open_page: OpenPage, database: Database,  # type: ignore[no-untyped-def]
                                                          people: dict[str, User]) -> None:
    with database.session() as session:
        save_resource(session, ResourceChanges(
            name="staging-db", kind="database", description="", approvals_required=1, max_duration_seconds=None,
            pending_ttl_seconds=3600, auto_approve=False,
            approver_ids=[people["approver"].id, people["approver2"].id],  # type: ignore[list-item]
        ), resource=None, actor="test", actor_id=None)
    server = serve()
    member = open_page(server, javascript=False)
    sign_in(member, "member@example.com")
    member.goto("/requests/new")
    choose_resource(member, "staging-db")
    member.page.get_by_label("Why do you need it?").fill(REASON)
    post_and_follow(member, member.page.get_by_role("button", name="Send request"))
    first, second = open_page(server), open_page(server)
    # The second approver's page has lost its live feed (a phone on a train), so it still
    # offers Approve after the first approval; otherwise the page would follow it live.
    second.page.route("**/events", lambda route: route.abort())
    for approver, email in ((first, "approver@example.com"), (second, "approver2@example.com")):
        sign_in(approver, email)
        approver.goto(member.path)
    first.page.get_by_role("button", name="Approve").click()
    expect(first.page.locator("#request-detail h1 .badge")).to_have_text("approved")
    second.page.get_by_role("button", name="Approve").click()  # on a page that still offers it
    toast = second.page.locator("#toasts [role=alert]")
    expect(toast).to_contain_text("already approved")
    assert second.path == member.path
    assert second.page.locator("main").count() == 1, "a whole page was put into the toast region"
