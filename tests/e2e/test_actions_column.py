"""Issue 15, item 11: a table shows an Actions column only while one of its rows has an action
(pure CSS, so also without JavaScript): My requests shows it for a request that can still be
cancelled, and drops it once the request is decided and nothing is left to do."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from support.browser import LiveServer, Watched, send_request, sign_in

OpenPage = Callable[..., Watched]


def test_the_actions_column_shows_only_when_a_row_has_an_action(server: LiveServer, open_page: OpenPage) -> None:
    member = open_page(server)
    sign_in(member, "member@example.com")
    request_id = send_request(member, "staging-db", "Checking the nightly backups of the staging database.")
    plain = open_page(server, javascript=False)
    sign_in(plain, "member@example.com")

    plain.goto("/my/requests")
    actions = plain.page.get_by_role("columnheader", name="Actions")
    expect(actions).to_be_visible()
    expect(plain.page.get_by_role("button", name=f"Cancel request #{request_id}")).to_be_visible()

    approver = open_page(server)
    sign_in(approver, "approver@example.com")
    approver.goto("/approvals")
    approver.page.get_by_role("button", name=f"Approve request #{request_id}").click()
    expect(approver.page.locator("#flash")).to_contain_text(f"Request #{request_id} approved.")

    plain.goto("/my/requests")
    expect(plain.page.get_by_role("cell", name="approved")).to_be_visible()
    expect(actions).to_have_count(0)  # hidden: out of the accessibility tree, as its empty cells are
    admin = open_page(server, javascript=False)
    sign_in(admin, "admin@example.com")
    admin.goto("/requests?status=approved")
    expect(admin.page.get_by_role("link", name=f"#{request_id}")).to_be_visible()
    expect(admin.page.get_by_role("columnheader", name="Actions")).to_have_count(0)
