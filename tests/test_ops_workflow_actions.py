"""/ops/workflows/{id}: steps, and cancel / resume / fork on real request workflows."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_resource, status_of, submit
from support.waiting import wait_for
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import AccessRequest, AuditEvent, Grant, Notification

JSON = {"Accept": "application/json"}


def workflow_of(database: Database, request_id: int) -> str:
    with database.session() as session:
        return session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr,return-value]


def page(client: TestClient, workflow_id: str) -> dict[str, Any]:
    response = client.get(f"/ops/workflows/{quote(workflow_id, safe='')}", headers=JSON)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_status(client: TestClient, workflow_id: str, *statuses: str) -> dict[str, Any]:
    return wait_for(lambda: (p := page(client, workflow_id))["status"] in statuses and p,  # type: ignore[no-any-return]
                    what=f"{workflow_id} to be {statuses}")


def act(client: TestClient, workflow_id: str, action: str, **fields: Any):  # type: ignore[no-untyped-def]
    return post_form(client, f"/ops/workflows/{quote(workflow_id, safe='')}/{action}", fields)


def audit_rows(database: Database, workflow_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    with database.session() as session:
        return [(e.action, e.actor, e.details) for e in session.scalars(
            sa.select(AuditEvent).where(AuditEvent.subject == f"workflow:{workflow_id}").order_by(AuditEvent.id))]


def test_cancel_a_waiting_request_workflow_then_resume_it(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    admin, member = clients["admin"], clients["member"]
    request_id = submit(member, make_resource(database, people))
    workflow_id = workflow_of(database, request_id)
    waiting = wait_status(admin, workflow_id, "PENDING")
    assert [s["name"] for s in waiting["steps"]][0].endswith("record_request")
    assert waiting["link"] == f"/requests/{request_id}"

    confirm = admin.get(f"/ops/workflows/{quote(workflow_id, safe='')}?confirm=cancel", headers={"HX-Request": "true"})
    assert confirm.status_code == 200 and confirm.text.lstrip().startswith('<section id="confirm"')
    assert 'name="reason"' in confirm.text and "Cancel this workflow" in confirm.text

    unexplained = act(admin, workflow_id, "cancel", reason="")
    assert unexplained.status_code == 422 and 'id="reason-error"' in unexplained.text
    assert page(admin, workflow_id)["status"] == "PENDING" and audit_rows(database, workflow_id) == []

    assert act(admin, workflow_id, "cancel", reason="approver on leave, stuck").status_code == 303
    assert page(admin, workflow_id)["status"] == "CANCELLED"
    again = act(admin, workflow_id, "cancel", reason="twice")
    assert again.status_code == 409 and "nothing to cancel" in again.text

    assert act(admin, workflow_id, "resume", reason="approver is back").status_code == 303
    wait_status(admin, workflow_id, "PENDING")
    assert post_form(clients["approver"], f"/requests/{request_id}/approve", {"comment": "ok"}).status_code == 303
    wait_for(lambda: status_of(database, request_id) == "approved", what="approval after resume")
    assert [(a, actor, d["reason"]) for a, actor, d in audit_rows(database, workflow_id)] == [
        ("workflow.cancelled", "admin@example.com", "approver on leave, stuck"),
        ("workflow.resumed", "admin@example.com", "approver is back")]


def test_fork_an_approved_request_from_its_notify_step_sends_one_new_message(  # type: ignore[no-untyped-def]
        clients, database: Database, people) -> None:
    admin = clients["admin"]
    request_id = submit(clients["member"], make_resource(database, people, "vpn", auto_approve=True), "permanent")
    workflow_id = workflow_of(database, request_id)
    done = wait_status(admin, workflow_id, "SUCCESS")

    def approved_messages() -> list[str]:
        with database.session() as session:
            return list(session.scalars(sa.select(Notification.dedup_key).where(
                Notification.request_id == request_id, Notification.dedup_key.contains("request.approved"))))  # type: ignore[attr-defined]

    wait_for(lambda: len(approved_messages()) == 1, what="the first message")
    names = [s["name"] for s in done["steps"]]
    grant_step = next(s["number"] for s in done["steps"] if s["name"].endswith("create_grant"))
    notify_step = next(s["number"] for s in done["steps"]
                       if s["name"] == "notify.active_channels" and s["number"] > grant_step)

    refused = act(admin, workflow_id, "resume", reason="send it again")
    assert refused.status_code == 409 and "Fork it from a step" in refused.text
    too_far = act(admin, workflow_id, "fork", reason="again", step=len(names) + 5)
    assert too_far.status_code == 409 and "Choose a step" in too_far.text

    forked = act(admin, workflow_id, "fork", reason="member lost the mail", step=notify_step)
    assert forked.status_code == 303
    fork_id = forked.headers["location"].rsplit("/", 1)[1]
    assert fork_id.startswith(quote(workflow_id, safe="") + ".fork-")
    fork = wait_status(admin, workflow_id + fork_id[len(quote(workflow_id, safe="")):], "SUCCESS")
    assert fork["forked_from"] == workflow_id and fork["link"] == f"/requests/{request_id}"

    wait_for(lambda: len(approved_messages()) == 2, what="the fork's message")
    keys = approved_messages()
    assert sum(fork["id"].rsplit(".", 1)[1] in key for key in keys) == 1, keys
    with database.session() as session:  # the steps before the fork point were not run again
        assert session.scalar(sa.select(sa.func.count()).select_from(Grant).where(Grant.request_id == request_id)) == 1
    assert page(admin, workflow_id)["forks"][0]["id"] == fork["id"]
    [(action, actor, details)] = audit_rows(database, workflow_id)
    assert (action, actor, details["forked_to"], details["from_step"], details["reason"]) == (
        "workflow.forked", "admin@example.com", fork["id"], notify_step, "member lost the mail")
    listed = admin.get(f"/ops/workflows?prefix={quote(fork['id'])}", headers=JSON).json()["workflows"]
    assert listed[0]["link"] == f"/requests/{request_id}"


def test_refusals_change_nothing(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    admin = clients["admin"]
    request_id = submit(clients["member"], make_resource(database, people))
    workflow_id = workflow_of(database, request_id)
    wait_status(admin, workflow_id, "PENDING")

    running = act(admin, workflow_id, "fork", reason="try", step=1)
    assert running.status_code == 409 and "cancel it before forking" in running.text
    resumed = act(admin, workflow_id, "resume", reason="try")
    assert resumed.status_code == 409 and "nothing to resume" in resumed.text
    missing = admin.post("/ops/workflows/no-such-workflow/cancel", data={"reason": "try"},
                         headers={**JSON, "X-CSRF-Token": admin.cookies["gh_csrf"]})
    assert missing.status_code == 404 and "No workflow" in missing.json()["error"]
    assert admin.get("/ops/workflows/no-such-workflow").status_code == 404
    assert page(admin, workflow_id)["status"] == "PENDING" and audit_rows(database, workflow_id) == []
    assert status_of(database, request_id) == "requested"


def test_the_page_shows_steps_and_offers_only_what_is_allowed(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    admin = clients["admin"]
    request_id = submit(clients["member"], make_resource(database, people))
    workflow_id = workflow_of(database, request_id)
    wait_status(admin, workflow_id, "PENDING")
    html = admin.get(f"/ops/workflows/{quote(workflow_id, safe='')}").text
    assert f'href="/requests/{request_id}"' in html and "record_request" in html
    assert "?confirm=cancel" in html and "?confirm=resume" not in html
    assert "cancel it before forking" in html and "Fork from here" not in html
    path = f"/ops/workflows/{quote(workflow_id, safe='')}?confirm=fork"
    assert "runs every step again" in admin.get(f"{path}&step=1").text, "no 'steps 1 to 0'"
    assert "reuses the recorded result of step 1, and runs step 2 onwards" in admin.get(f"{path}&step=2").text
    assert "reuses the recorded results of steps 1 to 3, and runs step 4 onwards" in admin.get(f"{path}&step=4").text
    listing = admin.get("/ops/workflows?name=access_request_workflow").text
    assert f'href="/ops/workflows/{quote(workflow_id, safe="")}"' in listing
