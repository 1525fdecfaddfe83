"""Fulfilment follows along in the browser (issue 13): the assignee's task list shows a manual
task the moment the grant is made, the holder's request page moves from "being provisioned"
to "active" when the assignee marks the task done, and the admin's agents page counts the open
task and then none. None of these pages reloads."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from playwright.sync_api import expect

from support.access import REASON, make_agent, make_resource
from support.browser import LiveServer, Watched, send_request, sign_in
from webapp.core.db import Database

OpenPage = Callable[..., Watched]
LIVE_MS = 10_000


def signed_in(server: LiveServer, open_page: OpenPage, email: str, path: str) -> Watched:
    window = open_page(server)
    sign_in(window, email)
    window.goto(path)
    window.page.evaluate("window.notReloaded = true")  # any reload wipes it out
    return window


def not_reloaded(window: Watched) -> bool:
    return window.page.evaluate("window.notReloaded === true") is True


def test_tasks_the_request_page_and_agents_follow_a_manual_grant(serve: Any, open_page: OpenPage,
                                                                 database: Database, people: dict[str, Any]) -> None:
    # The assignee does not approve this resource, so only the task tells them.
    agent_id = make_agent(database, "manual", {"assignees": "approver2@example.com"}, name="console-team")
    make_resource(database, people, "aws-production", approvers=("approver",), agent_id=agent_id,
                  target="Admins group")
    server: LiveServer = serve()
    holder = signed_in(server, open_page, "member@example.com", "/")
    request_id = send_request(holder, "aws-production", REASON)
    holder.page.evaluate("window.notReloaded = true")

    assignee = signed_in(server, open_page, "approver2@example.com", "/tasks")
    admin = signed_in(server, open_page, "admin@example.com", "/admin/agents")
    expect(assignee.page.locator("#tasks")).to_contain_text("Nothing waits for you")

    approver = signed_in(server, open_page, "approver@example.com", f"/requests/{request_id}")
    approver.page.get_by_role("button", name="Approve").first.click()

    task_link = assignee.page.get_by_role("link", name="Add Mo Member to aws-production", exact=False)
    expect(task_link.first).to_be_visible(timeout=LIVE_MS)
    expect(holder.page.locator('#request-detail [aria-current="step"]')).to_have_attribute(
        "data-stage", "provisioning", timeout=LIVE_MS)
    expect(admin.page.locator(f"#agent-{agent_id} td").nth(4)).to_have_text("1", timeout=LIVE_MS)

    worker = signed_in(server, open_page, "approver2@example.com", "/tasks")
    worker.page.get_by_role("link", name="Add Mo Member to aws-production", exact=False).first.click()
    worker.page.get_by_role("button", name="Done").click()
    expect(worker.page.locator("#task h1")).to_contain_text("done")

    expect(holder.page.locator('#request-detail [aria-current="step"]')).to_have_attribute(
        "data-stage", "active", timeout=LIVE_MS)
    expect(assignee.page.locator("#tasks")).to_contain_text("Nothing waits for you", timeout=LIVE_MS)
    expect(admin.page.locator(f"#agent-{agent_id} td").nth(4)).to_have_text("0", timeout=LIVE_MS)
    for window in (assignee, holder, admin):
        assert not_reloaded(window)
        window.assert_clean()
