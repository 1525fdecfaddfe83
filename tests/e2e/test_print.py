"""Issue 15, item 13: a request's page and the audit log print as documents: the story and the
table, with exact times (paper has no hover), and none of the navigation, live messages, forms
or buttons; the audit table prints whole instead of scrolling in its box."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from support.browser import LiveServer, Watched, send_request, sign_in

OpenPage = Callable[..., Watched]
A4_WIDTH = (794, 1123)  # an A4 page at 96 dpi, in CSS pixels

AFTER_TIMES = """() => [...document.querySelectorAll('main time.ago')]
  .filter(t => t.offsetParent !== null)
  .map(t => getComputedStyle(t, '::after').content)"""


def test_the_request_page_and_the_audit_log_print_as_documents(server: LiveServer, open_page: OpenPage) -> None:
    member = open_page(server)
    sign_in(member, "member@example.com")
    request_id = send_request(member, "staging-db", "Checking the nightly backups of the staging database.")
    admin = open_page(server, viewport=A4_WIDTH)
    sign_in(admin, "admin@example.com")
    page = admin.page

    admin.goto(f"/requests/{request_id}")
    page.emulate_media(media="print")
    expect(page.locator("main h1")).to_contain_text(f"Request #{request_id}")
    expect(page.locator(".timeline")).to_be_visible()
    for hidden in (".site-header", ".site-footer", "#toasts", "main form"):
        expect(page.locator(hidden).first).to_be_hidden()
    expect(page.get_by_role("button")).to_have_count(0)  # none of the decisions or the revoke are printed
    printed_times = page.evaluate(AFTER_TIMES)
    assert printed_times and all(t.startswith('" (') and "20" in t for t in printed_times), printed_times
    page.emulate_media(media="screen")
    assert page.evaluate(AFTER_TIMES) == ["none"] * len(printed_times)  # on screen, the exact time is the title

    admin.goto("/audit")
    page.emulate_media(media="print")
    table = page.locator("main table").first
    expect(table).to_be_visible()
    expect(page.locator(".site-header")).to_be_hidden()
    assert page.evaluate("document.querySelector('main .table-scroll').scrollWidth <= window.innerWidth"), \
        "the audit table fits the printed page"
    expect(table).to_contain_text("request.submitted")
    assert page.pdf(format="A4")[:5] == b"%PDF-"  # Chromium lays it out as paper without complaint
    admin.assert_clean()
