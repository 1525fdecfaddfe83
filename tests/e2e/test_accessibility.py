"""axe-core (WCAG 2 A and AA) on every page the app has, as each role sees it, in Chromium
with the app's CSP enforced; and no console errors, page errors or CSP violations anywhere.

One test walks the whole app over the demo organisation (tables full of every status) and
reports every violation at once, page by page, before failing.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from support.browser import (
    PASSWORD,
    Watched,
    choose_resource,
    describe_violations,
    expected_status,
    post,
    run_axe,
    sign_in,
)
from support.waiting import wait_for
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Agent, FulfilmentTask, Grant, Notification
from webapp.services.demo import email_for, seed_demo

MEMBER = email_for("Jamal Carter")
APPROVER = email_for("Chiara Rossi")  # approves aws-staging (one approval needed)
ADMIN = email_for("Ada Okafor")
REASON = "Debugging the staging deploy pipeline this week."


class Audit:
    """Runs axe and the console check on each page; fails once, at the end, with everything."""

    def __init__(self) -> None:
        self.results: dict[str, list[dict[str, Any]]] = {}
        self.console: dict[str, list[str]] = {}

    def check(self, watched: Watched, label: str, *, allow: tuple[str, ...] = ()) -> None:
        where = f"{label} ({watched.path})"
        self.results[where] = run_axe(watched)
        problems = watched.problems(allow=allow)
        if problems:
            self.console[where] = problems
        watched.console.clear()
        watched.errors.clear()

    def assert_clean(self) -> None:
        report = [describe_violations(where, found) for where, found in self.results.items() if found]
        report += [f"{where}: the browser reported\n  " + "\n  ".join(lines) for where, lines in self.console.items()]
        assert not report, "\n".join(report)


def waiting_task(database: Database, request_id: int) -> int:
    """A manual task waiting for a person, on a demo grant: its page shows the forms people use
    (only rendered here; tests/test_fulfilment.py drives the real thing)."""
    with database.session() as session:
        grant = session.scalars(sa.select(Grant).where(Grant.request_id == request_id)).one()
        desk = session.scalars(sa.select(Agent).where(Agent.kind == "manual")).first()
        task = FulfilmentTask(grant_id=grant.id, action="add", agent_id=desk.id, resource_id=grant.resource_id,  # type: ignore[union-attr, arg-type]
                              user_id=grant.user_id, target="Payroll admin console: HR role", status="waiting",
                              workflow_id=f"grant-{grant.id}-add")
        session.add(task)
        session.flush()
        return task.id  # type: ignore[return-value]


def emailed_links(database: Database, recipient: str, request_id: int) -> dict[str, str]:
    """The decision links (paths) of the outbox's message to `recipient` about the request."""
    def found() -> dict[str, str]:
        with database.session() as session:
            body = session.scalar(sa.select(Notification.body).where(
                Notification.recipient == recipient, Notification.request_id == request_id)) or ""
        return {kind: urlsplit(url).path for kind, url in re.findall(r"^(Approve|Reject): (\S+)$", body, re.M)}
    links: dict[str, str] = wait_for(found, what=f"the outbox message to {recipient}")
    return links


def test_every_page_passes_axe_with_a_clean_console(serve, open_page, database: Database) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        seed_demo(session, password=PASSWORD)
        granted = session.scalars(  # a demo request whose grant is still on: admins may revoke it
            sa.select(Grant.request_id).where(Grant.request_id.is_not(None), Grant.revoked_at.is_(None))  # type: ignore[union-attr]
            .order_by(Grant.id)
        ).first()
    assert granted is not None
    task_id = waiting_task(database, granted)
    server = serve()
    audit = Audit()

    # Signed out. First, proof that the console check sees a CSP violation: an inline script.
    visitor = open_page(server)
    visitor.goto("/login")
    visitor.page.evaluate("""() => {
        const script = document.createElement('script');
        script.textContent = 'window.inlineRan = true';
        document.head.append(script);
    }""")
    assert visitor.page.evaluate("() => window.inlineRan === undefined")
    assert any("Content Security Policy" in line for line in visitor.problems()), visitor.problems()
    visitor.goto("/login")
    visitor.console.clear()
    audit.check(visitor, "sign-in form")
    visitor.page.get_by_label("Email").fill(MEMBER)
    visitor.page.get_by_label("Password").fill("not the password")
    assert post(visitor, visitor.page.get_by_role("button", name="Sign in")).status == 422
    visitor.page.get_by_role("alert").wait_for()
    audit.check(visitor, "sign-in refused (422)", allow=(expected_status(422),))
    visitor.goto("/docs")
    audit.check(visitor, "API docs")

    # A member: home, the request form (with errors, then sent), their lists, an error page.
    member = open_page(server)
    sign_in(member, MEMBER)
    audit.check(member, "home")
    member.goto("/requests/new")
    audit.check(member, "request form")
    form = member.page.locator("#request-form")
    choose_resource(member, "aws-staging")
    form.get_by_label("Why do you need it?").fill("too short")
    form.get_by_role("button", name="Send request").click()
    member.page.locator("#reason-error").wait_for()
    audit.check(member, "request form with errors (422, swapped by htmx)", allow=(expected_status(422),))
    member.page.locator("#request-form").get_by_label("Why do you need it?").fill(REASON)
    member.page.locator("#request-form").get_by_role("button", name="Send request").click()
    member.page.locator("#request-detail").wait_for()
    request_id = int(re.search(r"Request #(\d+)", member.page.locator("#request-detail h1").inner_text())[1])  # type: ignore[index]
    member.goto(f"/requests/{request_id}")
    assert member.page.get_by_role("button", name="Cancel this request").is_visible()
    audit.check(member, "my pending request, with cancel")
    member.goto("/my/requests")
    audit.check(member, "my requests")
    member.goto("/my/access")
    audit.check(member, "my access")
    member.goto("/tasks")
    audit.check(member, "my tasks (none to do)")
    member.goto("/account")
    audit.check(member, "my settings (time zone)")
    member.goto("/account/tokens")
    audit.check(member, "my API tokens, with the form to issue one")
    member.goto("/requests")
    audit.check(member, "all my visible requests")
    member.goto("/requests/999999", status=404)
    audit.check(member, "error page (404)", allow=(expected_status(404),))

    # An approver: the queue and a request with the decision forms.
    approver = open_page(server)
    sign_in(approver, APPROVER)
    approver.goto("/approvals")
    assert approver.page.locator(f"#request-row-{request_id}").is_visible()
    audit.check(approver, "waiting for my approval")
    approver.goto(f"/requests/{request_id}")
    assert approver.page.get_by_role("button", name="Approve").is_visible()
    audit.check(approver, "request with decision buttons")
    for kind, path in emailed_links(database, APPROVER, request_id).items():
        approver.goto(path)  # opening an emailed link: a page that asks to confirm
        assert approver.page.get_by_role("button", name=f"{kind} request #{request_id}").is_visible()
        audit.check(approver, f"an emailed {kind.lower()} link's confirmation")
    approver.goto("/requests?status=requested&sort=requester&order=asc")
    assert approver.page.get_by_role("button", name=f"Approve request #{request_id}").is_visible()
    audit.check(approver, "requests table, filtered and sorted, with row decision forms")
    approver.page.locator("#sort-resource").click()  # htmx swaps the table in place
    approver.page.wait_for_url("**/requests?*sort=resource*")
    audit.check(approver, "requests table re-sorted by htmx")

    # An admin: people, one person (and a new token), resources, one resource, the outbox,
    # a granted request with the revoke form, and forms re-rendered with errors.
    admin = open_page(server)
    sign_in(admin, ADMIN)
    admin.goto("/admin/users")
    audit.check(admin, "people")
    add_person = admin.page.locator("#new-user")
    add_person.get_by_label("Email").fill("someone@example.com")
    add_person.get_by_label("Name").fill("Someone New")
    add_person.get_by_label("Password").fill("short")
    add_person.get_by_role("button", name="Add person").click()
    admin.page.locator("#password-error").wait_for()
    audit.check(admin, "add a person with errors (422)", allow=(expected_status(422),))
    admin.page.get_by_role("link", name="Jamal Carter").click()
    admin.page.wait_for_url(re.compile(r"/admin/users/\d+$"))
    audit.check(admin, "one person")
    admin.goto("/account/tokens")
    admin.page.get_by_label("Token name").fill("nightly sync")
    admin.page.get_by_role("checkbox", name="operate").check()
    admin.page.get_by_role("button", name="Issue token").click()
    admin.page.locator("#new-secret").wait_for()
    audit.check(admin, "my API tokens with a new one (201)")
    admin.goto("/admin/resources")
    audit.check(admin, "resources")
    add_resource = admin.page.locator("#new-resource")
    add_resource.get_by_label("Name").fill("bad name!")
    add_resource.get_by_role("button", name="Add resource").click()
    admin.page.locator("#name-error").wait_for()
    audit.check(admin, "add a resource with errors (422)", allow=(expected_status(422),))
    admin.goto("/admin/resources")
    admin.page.get_by_role("link", name="aws-staging").click()
    admin.page.wait_for_url(re.compile(r"/admin/resources/\d+$"))
    audit.check(admin, "one resource")
    admin.page.locator("#access-at-form").get_by_role("button", name="Who had access?").click()
    admin.page.locator("#access-at-table").wait_for()  # htmx swaps the answer in below the form
    audit.check(admin, "one resource with who had access now")
    admin.page.locator("#resource-access").get_by_role("link", name="Link to this answer").click()
    admin.page.wait_for_url(re.compile(r"/admin/resources/\d+/access\?at="))
    audit.check(admin, "who had access at a time")
    admin.goto(admin.path.split("?")[0] + "?at=yesterday", status=400)
    audit.check(admin, "who had access at a time, with a bad time (400)", allow=(expected_status(400),))
    for path, label in (("/notifications", "outbox"), ("/errors", "error log"),
                        ("/audit?action=request.", "audit log, filtered"), ("/ops/workflows", "workflows"),
                        ("/ops/queues", "queues"), ("/ops/schedules", "schedules"), ("/ops/executors", "executors"),
                        ("/tasks", "tasks"), ("/admin/agents", "agents")):
        admin.goto(path)
        audit.check(admin, label)
    admin.page.get_by_role("link", name="finance-service-desk").click()
    admin.page.wait_for_url(re.compile(r"/admin/agents/\d+$"))
    audit.check(admin, "one agent")
    admin.goto(f"/tasks/{task_id}")
    assert admin.page.get_by_role("button", name="Done").is_visible()
    audit.check(admin, "a person's task, with Done and Can't do")
    admin.goto("/ops/schedules")
    admin.page.get_by_role("button", name="Pause schedule sweep").click()  # htmx swaps the table
    admin.page.get_by_role("button", name="Resume schedule sweep").wait_for()
    audit.check(admin, "schedules after a pause, swapped by htmx")
    admin.page.get_by_role("button", name="Resume schedule sweep").click()
    admin.page.get_by_role("button", name="Pause schedule sweep").wait_for()
    with database.session() as session:
        workflow_id = session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr]
    admin.goto(f"/ops/workflows/{workflow_id}")
    audit.check(admin, "one workflow, its steps and actions")
    admin.page.get_by_role("link", name="Cancel…").click()  # htmx brings the confirmation in
    admin.page.get_by_label("Why (kept in the audit log)").wait_for()
    audit.check(admin, "workflow cancel confirmation, swapped by htmx")
    admin.goto("/ops/batches")
    audit.check(admin, "batches")
    admin.page.get_by_role("button", name="Start 10", exact=True).click()
    admin.page.locator(".batch-progress").wait_for()
    audit.check(admin, "a load batch's progress, swapped by htmx")
    admin.goto(f"/requests/{granted}")
    admin.page.get_by_text("Revoke access…").click()  # the confirmation opens
    assert admin.page.get_by_role("button", name="Revoke access now").is_visible()
    audit.check(admin, "granted request with the revoke form")

    # The dark theme (it follows the system setting) keeps the same contrast.
    dark = open_page(server, color_scheme="dark")
    sign_in(dark, ADMIN)
    for path, label in (("/", "home"), ("/approvals", "approvals queue"), ("/requests/new", "request form"),
                        (f"/requests/{granted}", "granted request"), ("/admin/agents", "agents")):
        dark.goto(path)
        assert dark.page.evaluate("getComputedStyle(document.documentElement).backgroundColor") == "rgb(13, 17, 23)"
        audit.check(dark, f"{label}, dark")

    audit.assert_clean()

