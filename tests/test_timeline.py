"""A request's story on its page (issue 15, item 10): each step in words, in order, with who
decided, through which channel, why, and links to what it refers to."""

from __future__ import annotations

import re
from typing import Any

from starlette.testclient import TestClient

from support.access import REASON, make_resource, submit
from support.waiting import wait_for
from support.web import personal_token, post_form
from webapp.core.db import Database
from webapp.core.models import Grant, User


def story_of(client: TestClient, request_id: int) -> list[str]:
    """The moments of the page's story, as text, oldest first."""
    page = client.get(f"/requests/{request_id}").text
    timeline = page.split('<ol class="timeline"', 1)[1].split("</ol>", 1)[0]
    items = re.findall(r"<li class=\"moment moment-(\w+)\">(.*?)</li>", timeline, re.S)
    return [f"{kind}: " + " ".join(re.sub(r"<time[^>]*>.*?</time>|<[^>]+>", " ", body).split()) for kind, body in items]


def test_the_story_tells_who_did_what_how_and_why(clients: dict[str, TestClient], database: Database,
                                                  people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people, required=2)
    request_id = submit(clients["member"], resource_id)
    post_form(clients["approver"], f"/requests/{request_id}/approve", {"comment": "Fine by me."})
    with database.session() as session:
        token, secret = personal_token(session, session.get(User, people["approver2"].id), name="ci")
    answer = clients["approver2"].post(f"/requests/{request_id}/approve", data={"comment": "Scripted."},
                                       headers={"Authorization": f"Bearer {secret}", "Accept": "application/json"})
    assert answer.status_code == 200, answer.text
    grant = wait_for(lambda: _grant(database, request_id), what="the grant")
    post_form(clients["admin"], f"/grants/{grant.id}/revoke", {"note": "Project over."})

    told = story_of(clients["member"], request_id)
    assert told[:3] == [
        f"request: member@example.com asked for orders-db for 8 hours via web “{REASON}”",
        "decision: approver@example.com approved (1 of 2); more are needed via web",
        f"decision: approver2@example.com approved (2 of 2) via API (token #{token.id}) “Scripted.”",
    ]
    assert told[3].startswith("grant: Access granted until ") and told[3].endswith(" UTC")
    assert told[4] == "grant: Revoked by admin@example.com via web “Project over.”"


def _grant(database: Database, request_id: int) -> Grant | None:
    with database.session() as session:
        return session.query(Grant).filter_by(request_id=request_id).one_or_none()


def test_an_extension_and_its_grant_link_each_other(clients: dict[str, TestClient], database: Database,
                                                    people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people, auto_approve=True)
    first = submit(clients["member"], resource_id, "1h")
    grant = wait_for(lambda: _grant(database, first), what="the grant")
    answer = post_form(clients["member"], "/requests", {"resource_id": resource_id, "extends_grant_id": grant.id,
                                                        "duration": "8h", "reason": REASON, "form_key": "k" * 12})
    extension = int(answer.headers["location"].rsplit("/", 1)[1])
    wait_for(lambda: any("Extended" in m for m in story_of(clients["member"], first)), what="the extension told")
    [extended] = [m for m in story_of(clients["member"], first) if "Extended" in m]
    assert extended.startswith("grant: Extended: now ends ") and f"Extension: request #{extension}" in extended
    told = story_of(clients["member"], extension)
    assert told[-1].startswith("grant: Extended: now ends "), "the extension's own story ends with the move"
    assert not any("Access granted" in m for m in told), "the grant's own events stay in its request's story"
