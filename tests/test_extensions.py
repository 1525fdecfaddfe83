"""Extend and request again (issue 15, items 8 and 9): a request for something held is refused
with a way to extend it; an approved extension moves the grant's end, without a gap and
without a second grant, and the grant's sleeping workflow ends it at the new time; an earlier
request can be copied into the form."""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from support.access import REASON, make_resource, status_of, submit
from support.waiting import wait_for
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import AccessRequest, AuditEvent, Grant
from webapp.services.access import reminder_policy
from webapp.workflows.access import access_request_workflow


def grants_of(database: Database, resource_id: int) -> list[Grant]:
    with database.session() as session:
        return list(session.scalars(sa.select(Grant).where(Grant.resource_id == resource_id).order_by(Grant.id)))


def extend(client: TestClient, grant_id: int, resource_id: int, duration: str = "8h", **extra: Any):  # type: ignore[no-untyped-def]
    return post_form(client, "/requests", {"resource_id": resource_id, "extends_grant_id": grant_id,
                                           "duration": duration, "reason": "The migration runs a day longer.",
                                           "form_key": uuid.uuid4().hex, **extra})


def test_an_approved_extension_moves_the_end_without_a_second_grant(clients: dict[str, TestClient],
                                                                    database: Database, people: dict[str, Any]) -> None:
    member, approver = clients["member"], clients["approver"]
    resource_id = make_resource(database, people)
    first = submit(member, resource_id, "1h")
    post_form(approver, f"/requests/{first}/approve")
    grant = wait_for(lambda: (grants_of(database, resource_id) or [None])[0], what="the grant")
    before = grant.expires_at

    # Asking again for what one holds is refused, with the way to extend it.
    refused = post_form(member, "/requests", {"resource_id": resource_id, "duration": "8h", "reason": REASON,
                                              "form_key": uuid.uuid4().hex})
    assert refused.status_code == 422 and "You already hold orders-db until" in refused.text
    assert f'href="/requests/new?extend={grant.id}"' in refused.text
    assert f'href="/requests/new?extend={grant.id}"' in member.get("/my/access").text

    form = member.get(f"/requests/new?extend={grant.id}").text
    assert "Extending your access to <strong>orders-db</strong>" in form
    assert f'name="extends_grant_id" value="{grant.id}"' in form and ">Permanent<" not in form
    answer = extend(member, grant.id, resource_id)
    assert answer.status_code == 303, answer.text
    extension = int(answer.headers["location"].rsplit("/", 1)[1])
    assert f"Extension waiting (#{extension})" in member.get("/my/access").text
    assert "Extends" in member.get(f"/requests/{extension}").text

    post_form(approver, f"/requests/{extension}/approve")
    wait_for(lambda: grants_of(database, resource_id)[0].expires_at != before, what="the end to move")
    [moved] = grants_of(database, resource_id)
    assert moved.id == grant.id and moved.revoked_at is None
    assert moved.expires_at == before + timedelta(hours=8), "no gap: the new time follows the old end"
    assert status_of(database, extension) == "approved" and status_of(database, first) == "approved"
    with database.session() as session:
        extended = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "grant.extended")).one()
        workflow_id = session.get(AccessRequest, first).workflow_id  # type: ignore[union-attr]
    assert extended.details["request"] == extension and extended.request_id == first
    assert DBOS.get_workflow_status(workflow_id).status == "PENDING", "the grant's workflow sleeps on, to the new end"

    # Revoking the grant ends the extension with it.
    assert post_form(clients["admin"], f"/grants/{grant.id}/revoke").status_code == 303
    assert status_of(database, first) == status_of(database, extension) == "revoked"
    again = member.get("/my/requests").text
    assert f'href="/requests/new?again={extension}"' in again


def test_an_extension_must_extend_a_grant_of_ones_own_in_force(clients: dict[str, TestClient], database: Database,
                                                               people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people, auto_approve=True)
    submit(clients["approver"], resource_id, "1h")  # the approver's own grant
    theirs = wait_for(lambda: (grants_of(database, resource_id) or [None])[0], what="their grant")
    answer = extend(clients["member"], theirs.id, resource_id)
    assert answer.status_code == 422 and "no time-bound access to orders-db of yours" in answer.text
    assert "Extending" not in clients["member"].get(f"/requests/new?extend={theirs.id}").text
    mine = submit(clients["member"], resource_id, "1h")
    grant = wait_for(lambda: next((g for g in grants_of(database, resource_id) if g.request_id == mine), None),
                     what="my grant")
    answer = extend(clients["member"], grant.id, resource_id, duration="permanent")
    assert answer.status_code == 422 and "An extension adds a length of time" in answer.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AccessRequest)) == 2


def start(submission: dict[str, Any]) -> Any:
    with SetWorkflowID(f"test-extend-{uuid.uuid4().hex}"):
        return DBOS.start_workflow(access_request_workflow, submission)


def test_the_grant_ends_at_its_new_time(clients: dict[str, TestClient], database: Database, people: dict[str, Any],
                                        fast_settings: Any) -> None:
    """The grant's workflow sleeps until the old end; the extension wakes it to sleep on."""
    resource_id = make_resource(database, people, "short-lived", auto_approve=True)
    base = {"requester_id": people["member"].id, "resource_id": resource_id, "reason": REASON,
            "reminder": reminder_policy(fast_settings)}
    holder = start({**base, "duration_seconds": 3})
    grant = wait_for(lambda: (grants_of(database, resource_id) or [None])[0], what="the grant")
    old_end = grant.expires_at
    extension = start({**base, "duration_seconds": 2, "extends_grant_id": grant.id})
    assert extension.get_result() == "approved"
    assert grants_of(database, resource_id)[0].expires_at == old_end + timedelta(seconds=2)
    assert holder.get_result() == "approved"  # returns once the grant has ended
    [ended] = grants_of(database, resource_id)
    assert ended.revoked_at is not None and ended.revoked_at >= old_end + timedelta(seconds=2)
    assert (ended.revoked_at - ended.expires_at).total_seconds() < 2
    with database.session() as session:
        statuses = dict(session.execute(sa.select(AccessRequest.id, AccessRequest.status)).all())
    assert sorted(statuses.values()) == ["revoked", "revoked"]


def test_an_extension_of_a_grant_that_ended_meanwhile_grants_anew(clients: dict[str, TestClient],
                                                                  database: Database, people: dict[str, Any],
                                                                  fast_settings: Any) -> None:
    resource_id = make_resource(database, people, "ends-first", auto_approve=True)
    first = submit(clients["member"], resource_id, "1h")
    grant = wait_for(lambda: (grants_of(database, resource_id) or [None])[0], what="the grant")
    assert post_form(clients["admin"], f"/grants/{grant.id}/revoke").status_code == 303
    handle = start({"requester_id": people["member"].id, "resource_id": resource_id, "reason": REASON,
                    "reminder": reminder_policy(fast_settings), "duration_seconds": 3600, "extends_grant_id": grant.id})
    time.sleep(0.2)
    fresh = wait_for(lambda: next((g for g in grants_of(database, resource_id) if g.request_id != first), None),
                     what="a grant of its own")
    assert fresh.revoked_at is None and grants_of(database, resource_id)[0].revoked_at is not None
    DBOS.cancel_workflow(handle.workflow_id)


def test_request_again_copies_an_earlier_request_of_ones_own(clients: dict[str, TestClient], database: Database,
                                                             people: dict[str, Any]) -> None:
    member = clients["member"]
    resource_id = make_resource(database, people)
    request_id = submit(member, resource_id, "7d", reason="Quarter-end reporting for the finance team.")
    post_form(clients["approver"], f"/requests/{request_id}/reject", {"comment": "Use the replica."})
    row = next(r for r in member.get("/my/requests", headers={"accept": "application/json"}).json()
               if r["id"] == request_id)
    assert row["actions"]["again"] is True
    form = member.get(f"/requests/new?again={request_id}").text
    assert "Quarter-end reporting for the finance team.</textarea>" in form
    assert re.search(rf'id="resource-{resource_id}" value="{resource_id}" required aria-describedby="[^"]+" checked>', form)
    assert re.search(r'<option value="7d" selected>', form)
    assert "Quarter-end" not in clients["approver2"].get(f"/requests/new?again={request_id}").text, "not theirs"


def test_the_picker_says_what_each_resource_is_and_what_one_has_of_it(clients: dict[str, TestClient],
                                                                      database: Database,
                                                                      people: dict[str, Any]) -> None:
    member = clients["member"]
    held_id = make_resource(database, people, "orders-db", description="Orders and invoices.")
    pending_id = make_resource(database, people, "wiki", description="The team's <notes>.")
    free_id = make_resource(database, people, "vpn", auto_approve=True, approvers=())
    held_request = submit(member, held_id, "1h")
    post_form(clients["approver"], f"/requests/{held_request}/approve")
    grant = wait_for(lambda: (grants_of(database, held_id) or [None])[0], what="the grant")
    pending = submit(member, pending_id)

    page = member.get("/requests/new").text
    card = {rid: re.search(rf'<div class="resource-option[^"]*" data-search="[^"]*">\s*<input type="radio" '
                           rf'name="resource_id" id="resource-{rid}"(.*?)</div>\s*</div>', page, re.S)[1]  # type: ignore[index]
            for rid in (held_id, pending_id, free_id)}
    assert "Orders and invoices." in card[held_id] and " disabled" in card[held_id]
    assert "Approved by Arlo Approver, Bea Approver, usually within" in card[held_id]
    assert f'<a href="/requests/new?extend={grant.id}">Extend it' in card[held_id]
    assert "The team&#39;s &lt;notes&gt;." in card[pending_id] and f'<a href="/requests/{pending}">request #{pending}</a>' \
        in card[pending_id] and " disabled" in card[pending_id]
    assert "Approved at once" in card[free_id] and " disabled" not in card[free_id]

    found = member.get("/requests/new?q=INVOICES").text
    assert f'id="resource-{held_id}"' in found and f'id="resource-{free_id}"' not in found
    assert "No resource matches “nothing-like-it”" in member.get("/requests/new?q=nothing-like-it").text
    assert member.get("/requests/new?q=%00").status_code == 200
