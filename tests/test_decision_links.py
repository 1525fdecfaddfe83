"""Approve and reject links in approvers' emails (issue 14): the email a real SMTP server
receives carries them; opening one changes nothing; the POST from its page decides once, as
the approver it was sent to, recorded as the email channel; reuse 409, expiry 410, another
person 403, a forged link 404."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_resource, status_of, submit
from support.receivers import SmtpReceiver
from support.waiting import wait_for
from support.web import csrf_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Approval, AuditEvent, DecisionLinkUse


@pytest.fixture
def fast_settings(fast_settings: Settings, smtp_server: SmtpReceiver) -> Settings:
    """The suite's settings, with email on: the approvers' messages go to a real SMTP server."""
    return fast_settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": smtp_server.port,
                                            "smtp_starttls": False})


def emailed_links(smtp_server: SmtpReceiver, recipient: str, request_id: int) -> dict[str, str]:
    """The decision links (path only) in the email `recipient` got about `request_id`."""
    def found() -> dict[str, str] | None:
        for mail in smtp_server.received:
            body = mail.message.get_content().replace("\r\n", "\n")
            if recipient in mail.rcpt_tos and f"/requests/{request_id}\n" in body:
                return {kind.lower(): urlsplit(url).path for kind, url in
                        re.findall(r"^(Approve|Reject): (\S+)$", body, re.M)}
        return None
    links: dict[str, str] = wait_for(found, what=f"the email to {recipient}")
    return links


def post_link(client: TestClient, path: str, comment: str = "", **headers: str) -> Any:
    return client.post(path, data={"comment": comment, "csrf_token": csrf_token(client)},
                       headers={"Origin": "http://testserver", **headers}, follow_redirects=False)


def approvals(database: Database, request_id: int) -> int:
    with database.session() as session:
        return session.scalar(sa.select(sa.func.count()).select_from(Approval).where(
            Approval.request_id == request_id)) or 0


def test_an_emailed_link_asks_first_and_decides_once(clients: dict[str, TestClient], database: Database,
                                                     people: dict[str, Any], smtp_server: SmtpReceiver) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    links = emailed_links(smtp_server, "approver@example.com", request_id)
    assert set(links) == {"approve", "reject"} and links["approve"] != links["reject"]
    approve = links["approve"]

    signed_out = TestClient(clients["member"].app)
    answer = signed_out.get(approve, follow_redirects=False)
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login?next=%2Fdecide%2F")

    page = clients["approver"].get(approve)  # what a mail scanner, or the approver, sees
    assert page.status_code == 200 and f"Approve request #{request_id}" in page.text
    assert "Investigating the billing incident" in page.text and 'name="csrf_token"' in page.text
    assert status_of(database, request_id) == "requested" and approvals(database, request_id) == 0

    decided = post_link(clients["approver"], approve)
    assert decided.status_code == 303 and decided.headers["location"] == f"/requests/{request_id}"
    assert status_of(database, request_id) == "approved"
    with database.session() as session:
        event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "request.approved")).one()
        used = session.scalars(sa.select(DecisionLinkUse)).one()
    assert (event.channel, event.token_id, event.details["link"]) == ("email", None, used.link_id)
    assert "via an emailed link" in clients["member"].get(f"/requests/{request_id}").text

    for again in (clients["approver"].get(approve), post_link(clients["approver"], approve)):
        assert again.status_code == 409 and "This link was used on" in again.text
        assert f"approved request #{request_id}, which is now approved" in again.text
    assert approvals(database, request_id) == 1, "a reused link changes nothing"
    reject = post_link(clients["approver"], links["reject"], "Changed my mind.")
    assert reject.status_code == 409 and "already approved" in reject.text
    assert status_of(database, request_id) == "approved"


def test_a_link_is_for_the_approver_it_was_sent_to(clients: dict[str, TestClient], database: Database,
                                                   people: dict[str, Any], smtp_server: SmtpReceiver) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    links = emailed_links(smtp_server, "approver@example.com", request_id)
    for who in ("approver2", "member", "admin"):
        for answer in (clients[who].get(links["approve"]), post_link(clients[who], links["approve"])):
            assert answer.status_code == 403, (who, answer.text)
            assert "sent to another approver" in answer.text and "Investigating" not in answer.text
    assert status_of(database, request_id) == "requested" and approvals(database, request_id) == 0

    json_answer = post_link(clients["approver2"], links["reject"], "Nope.", Accept="application/json")
    assert json_answer.status_code == 403 and "another approver" in json_answer.json()["error"]

    no_reason = post_link(clients["approver"], links["reject"])
    assert no_reason.status_code == 422 and status_of(database, request_id) == "requested"
    rejected = post_link(clients["approver"], links["reject"], "Not for this project.")
    assert rejected.status_code == 303 and status_of(database, request_id) == "rejected"


def test_a_forged_or_expired_link_changes_nothing(clients: dict[str, TestClient], database: Database,
                                                  people: dict[str, Any], smtp_server: SmtpReceiver) -> None:
    request_id = submit(clients["member"], make_resource(database, people, pending_ttl_seconds=2))
    links = emailed_links(smtp_server, "approver@example.com", request_id)
    approve = links["approve"]
    payload, signature = approve.removeprefix("/decide/").rsplit(".", 1)
    for forged in (f"/decide/{payload}.{signature[::-1]}", f"/decide/{payload[:-2]}xx.{signature}",
                   "/decide/" + "A" * 500, links["reject"].replace("/decide/", "/decide/x")):
        for answer in (clients["approver"].get(forged), post_link(clients["approver"], forged)):
            assert answer.status_code == 404 and "not valid" in answer.text, forged

    wait_for(lambda: status_of(database, request_id) == "expired", what="the request to expire")
    for answer in (clients["approver"].get(approve), post_link(clients["approver"], approve)):
        assert answer.status_code == 410 and "This link expired on" in answer.text
    assert approvals(database, request_id) == 0
