"""The approver's queue (issue 15, items 3, 6 and 7), through the routes as a browser without
JavaScript and as a script: reasons in view, decisions inline and several at once, a message
saying what each did, the pending count, and the rejection's reason shown to the requester."""

from __future__ import annotations

import re
from typing import Any

import pytest
from starlette.testclient import TestClient

from support.access import REASON, make_resource, status_of, submit
from support.web import post_form, unmasked
from webapp.core.db import Database
from webapp.core.models import AuditEvent

JSON = {"accept": "application/json"}


@pytest.fixture
def queue(clients: dict[str, TestClient], database: Database, people: dict[str, Any]) -> list[int]:
    """Three requests from the member (one per resource: a second pending one would be refused),
    waiting for the approvers."""
    return [submit(clients["member"], make_resource(database, people, f"orders-db-{n}"), reason=f"{REASON} Case {n}.")
            for n in range(3)]


def flash_of(client: TestClient, path: str) -> str:
    """The message the page at `path` shows once (empty when none)."""
    found = re.search(r'id="flash"[^>]*>(.*?)</p>', client.get(path).text, re.S)
    return " ".join(re.sub(r"<[^>]+>", " ", found[1]).split()) if found else ""


def audit_count(database: Database) -> int:
    with database.session() as session:
        return session.query(AuditEvent).count()


def test_the_queue_shows_reasons_decisions_and_the_count(clients: dict[str, TestClient], queue: list[int]) -> None:
    page = unmasked(clients["approver"].get("/approvals").text)
    for n, request_id in enumerate(queue):
        assert f"{REASON} Case {n}." in page
        assert f'action="/requests/{request_id}/approve"' in page and f'action="/requests/{request_id}/reject"' in page
        assert f'<input type="checkbox" name="ids" value="{request_id}" form="bulk-decisions">' in page
    assert '<form id="bulk-decisions" method="post" action="/approvals"' in page
    assert re.search(r'id="pending-count"[^>]*>3<span class="visually-hidden"> waiting', page)
    assert clients["approver"].get("/approvals/count", headers=JSON).json() == {"waiting": 3}
    # The member has no queue: no link, no count.
    assert 'id="pending-count"' not in clients["member"].get("/").text


def test_a_decision_goes_back_to_the_list_it_came_from_and_says_what_it_did(
        clients: dict[str, TestClient], queue: list[int], database: Database) -> None:
    approver = clients["approver"]
    answer = post_form(approver, f"/requests/{queue[0]}/approve", headers={"referer": "http://testserver/approvals"})
    assert answer.status_code == 303 and answer.headers["location"] == "/approvals"
    assert status_of(database, queue[0]) == "approved"
    message = flash_of(approver, "/approvals")
    assert message == f"Request #{queue[0]} approved. Open request #{queue[0]}"
    assert flash_of(approver, "/approvals") == "", "shown once"
    page = approver.get("/approvals").text
    assert f"request-row-{queue[0]}" not in page and re.search(r'id="pending-count"[^>]*>2<', page)

    # From the request's own page (or a page that is not a list), back to the request.
    answer = post_form(approver, f"/requests/{queue[1]}/reject", {"comment": "Not this quarter."},
                       headers={"referer": f"http://testserver/requests/{queue[1]}"})
    assert answer.headers["location"] == f"/requests/{queue[1]}"
    assert flash_of(approver, f"/requests/{queue[1]}") == f"Request #{queue[1]} rejected."
    # A Referer from elsewhere never decides where the browser goes.
    answer = post_form(approver, f"/requests/{queue[2]}/approve", headers={"referer": "http://evil.example/approvals"})
    assert answer.headers["location"] == f"/requests/{queue[2]}"


def test_the_page_marks_the_message_for_focus(clients: dict[str, TestClient], queue: list[int]) -> None:
    approver = clients["approver"]
    post_form(approver, f"/requests/{queue[0]}/approve", headers={"referer": "http://testserver/approvals"})
    page = approver.get("/approvals").text
    assert re.search(r'<p class="flash flash-ok" role="status" id="flash" tabindex="-1" autofocus>', page)


def test_several_requests_are_decided_at_once(clients: dict[str, TestClient], queue: list[int],
                                              database: Database) -> None:
    approver = clients["approver"]
    post_form(clients["approver2"], f"/requests/{queue[2]}/reject", {"comment": "Decided elsewhere."})
    answer = post_form(approver, "/approvals", {"ids": [queue[0], queue[1], queue[2]], "decision": "approve"})
    assert answer.status_code == 303 and answer.headers["location"] == "/approvals"
    assert [status_of(database, i) for i in queue] == ["approved", "approved", "rejected"]
    message = flash_of(approver, "/approvals")
    assert message == (f"Approved #{queue[0]}, #{queue[1]}. Not changed: #{queue[2]} "
                       f"(This request is already rejected).")
    assert 'class="flash flash-warning"' not in approver.get("/approvals").text, "shown once"


def test_bulk_decisions_answer_json_for_scripts(clients: dict[str, TestClient], queue: list[int],
                                                database: Database) -> None:
    admin = clients["admin"]
    answer = admin.post("/approvals", headers={**JSON, "x-csrf-token": admin.cookies["gh_csrf"]},
                        data={"ids": [str(queue[0]), "999999"], "decision": "reject", "comment": "Too broad."})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"results": [
        {"id": queue[0], "applied": True, "status": "rejected", "note": ""},
        {"id": 999999, "applied": False, "status": None, "note": "No request #999999."},
    ]}


@pytest.mark.parametrize("form, field", [
    ({"decision": "approve"}, "ids"),
    ({"ids": "1", "decision": "reject", "comment": ""}, "comment"),
    ({"ids": "1", "decision": "reject", "comment": "no"}, "comment"),
    ({"ids": "1", "decision": "delete"}, "decision"),
    ({"ids": "one", "decision": "approve"}, "ids"),
    ({"ids": [str(n) for n in range(1, 102)], "decision": "approve"}, "ids"),
])
def test_bad_bulk_forms_are_refused_and_change_nothing(clients: dict[str, TestClient], queue: list[int],
                                                      database: Database, form: dict[str, Any], field: str) -> None:
    approver = clients["approver"]
    before = audit_count(database)
    answer = approver.post("/approvals", headers={**JSON, "x-csrf-token": approver.cookies["gh_csrf"]}, data=form)
    assert answer.status_code == 422 and field in answer.json()["fields"], answer.text
    page = post_form(approver, "/approvals", form)
    assert page.status_code == 422 and "Check your input" in page.text
    assert [status_of(database, i) for i in queue] == ["requested"] * 3 and audit_count(database) == before


def test_the_requester_reads_why_they_were_rejected(clients: dict[str, TestClient], queue: list[int]) -> None:
    post_form(clients["approver"], f"/requests/{queue[0]}/reject", {"comment": "Ask the DBA team <instead>."})
    member = clients["member"]
    row = next(r for r in member.get("/my/requests", headers=JSON).json() if r["id"] == queue[0])
    assert row["decision_note"] == "Ask the DBA team <instead>."
    page = member.get("/my/requests").text
    assert "Why: Ask the DBA team &lt;instead&gt;." in page
    assert 'class="requests-list mine"' in page, "the requester column is hidden there (always the member)"
    others = [r for r in member.get("/my/requests", headers=JSON).json() if r["id"] != queue[0]]
    assert all(r["decision_note"] is None for r in others)
