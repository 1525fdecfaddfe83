"""Deciding from Slack (issue 14): the approver's message carries Approve and Reject buttons;
a click signed as Slack signs it decides through the request's workflow, as the Gatehouse
person behind the Slack user, and the message is replaced with who decided; a forged or
replayed click is a 401 and changes nothing; a Slack user without an account or without the
right to decide is told why, alone, and nothing changes.

Slack's Web API and its webhook endpoints are a loopback stand-in (tests/support/slack_api.py);
the signing, the verifying and the Web API client are slack_sdk's own."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from slack_sdk.signature import SignatureVerifier
from starlette.testclient import TestClient

from support.access import make_resource, status_of, submit
from support.slack_api import BOT_TOKEN, SIGNING_SECRET, SlackStandIn
from support.waiting import wait_for
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Approval, AuditEvent

SLACK_PEOPLE = {"U01APPROVER": "approver@example.com", "U02APPROVER": "Approver2@Example.com",
                "U03MEMBER": "member@example.com", "U04STRANGER": "stranger@elsewhere.example"}


@pytest.fixture
def slack() -> Iterator[SlackStandIn]:
    with SlackStandIn(SLACK_PEOPLE) as stand_in:
        yield stand_in


@pytest.fixture
def fast_settings(fast_settings: Settings, slack: SlackStandIn) -> Settings:
    return fast_settings.model_copy(update={
        "slack_webhook_url": f"{slack.base}/incoming/T000/B000", "slack_signing_secret": SIGNING_SECRET,
        "slack_bot_token": BOT_TOKEN, "slack_api_url": f"{slack.base}/api/",
        "slack_response_url_prefix": f"{slack.base}/response/", "slack_rate_limit": 100,
    })


def click(client: TestClient, payload: dict[str, Any], *, secret: str = SIGNING_SECRET, age: float = 0,
          timestamp: str | None = None) -> Any:
    """POST an interaction as Slack does: form-encoded `payload`, signed over timestamp and body."""
    body = urlencode({"payload": json.dumps(payload)})
    stamp = timestamp if timestamp is not None else str(int(time.time() - age))
    signature = SignatureVerifier(secret).generate_signature(timestamp=stamp, body=body) if stamp.isdigit() else "v0=0"
    return client.post("/slack/actions", content=body, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or ""})


def approver_message(slack: SlackStandIn, recipient: str, request_id: int) -> dict[str, Any]:
    """The message Gatehouse posted for `recipient` about the request, with its buttons."""
    def found() -> dict[str, Any] | None:
        return next((m for m in slack.messages if f"for {recipient}" in m["text"]
                     and f"/requests/{request_id}|" in m["text"]), None)
    message: dict[str, Any] = wait_for(found, what=f"the Slack message for {recipient}")
    return message


def button_click(slack: SlackStandIn, message: dict[str, Any], action_id: str, slack_user: str) -> dict[str, Any]:
    """What Slack sends when `slack_user` presses the button `action_id` of `message`."""
    actions = next(block for block in message["blocks"] if block["type"] == "actions")
    button = next(element for element in actions["elements"] if element["action_id"] == action_id)
    return {"type": "block_actions", "user": {"id": slack_user}, "trigger_id": f"trigger-{slack_user}",
            "response_url": slack.response_url(), "message": {"blocks": message["blocks"]},
            "actions": [{"type": "button", "action_id": button["action_id"], "value": button["value"],
                         "block_id": actions["block_id"]}]}


def approvals(database: Database, request_id: int) -> list[tuple[int, str, str]]:
    with database.session() as session:
        return [tuple(row) for row in session.execute(sa.select(Approval.approver_id, Approval.decision,  # type: ignore[misc]
                Approval.comment).where(Approval.request_id == request_id))]


def test_approve_from_slack_decides_and_updates_the_message(clients: dict[str, TestClient], database: Database,
                                                             people: dict[str, Any], slack: SlackStandIn) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    message = approver_message(slack, "approver@example.com", request_id)
    labels = [e["text"]["text"] for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]
    assert labels == ["Approve", "Reject"]

    answer = click(clients["member"], button_click(slack, message, "approve", "U01APPROVER"))
    assert answer.status_code == 200
    wait_for(lambda: status_of(database, request_id) == "approved", what="the approval")
    with database.session() as session:
        event = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "request.approved")).one()
    assert (event.actor, event.channel, event.token_id) == ("approver@example.com", "slack", None)
    assert "via Slack" in clients["member"].get(f"/requests/{request_id}").text

    reply = wait_for(lambda: slack.replies, what="the message's update")[0]
    assert reply["replace_original"] is True
    assert f"approver@example.com approved request #{request_id}; it is now approved." in reply["text"]
    assert not [b for b in reply["blocks"] if b["type"] == "actions"], "the buttons are gone"
    assert reply["blocks"][0] == message["blocks"][0], "the request's text stays"

    later = click(clients["member"], button_click(slack, approver_message(slack, "approver2@example.com", request_id),
                                                  "reject", "U02APPROVER"))
    assert later.status_code == 200
    explained = wait_for(lambda: slack.replies[1:], what="the explanation")[0]
    assert explained["response_type"] == "ephemeral" and explained["replace_original"] is False
    assert explained["text"] == "Nothing changed: This request is already approved."
    assert not slack.views, "no reject form for a decided request"
    assert len(approvals(database, request_id)) == 1


def test_reject_asks_for_the_reason_in_a_modal(clients: dict[str, TestClient], database: Database,
                                               people: dict[str, Any], slack: SlackStandIn) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    message = approver_message(slack, "approver2@example.com", request_id)
    assert click(clients["member"], button_click(slack, message, "reject", "U02APPROVER")).status_code == 200
    [opened] = slack.views
    assert opened["trigger_id"] == "trigger-U02APPROVER" and opened["view"]["callback_id"] == "gatehouse.reject"
    assert status_of(database, request_id) == "requested", "the click alone decides nothing"

    def submitted(reason: str, user: str = "U02APPROVER") -> dict[str, Any]:
        view = {**opened["view"], "state": {"values": {"reason": {"reason_input": {"type": "plain_text_input",
                                                                                   "value": reason}}}}}
        return {"type": "view_submission", "user": {"id": user}, "view": view}

    too_short = click(clients["member"], submitted("no"))
    assert too_short.json() == {"response_action": "errors", "errors": {"reason": too_short.json()["errors"]["reason"]}}
    stranger = click(clients["member"], submitted("Not needed.", "U04STRANGER"))
    assert "matches no active Gatehouse account" in stranger.json()["errors"]["reason"]
    assert status_of(database, request_id) == "requested" and approvals(database, request_id) == []

    closed = click(clients["member"], submitted("Not needed for this project."))
    assert closed.status_code == 200 and closed.content == b""
    wait_for(lambda: status_of(database, request_id) == "rejected", what="the rejection")
    assert approvals(database, request_id) == [(people["approver2"].id, "reject", "Not needed for this project.")]
    reply = wait_for(lambda: slack.replies, what="the message's update")[0]
    assert f"approver2@example.com rejected request #{request_id}" in reply["text"]
    assert reply["blocks"][0] == message["blocks"][0]


def test_forged_or_replayed_clicks_are_refused(clients: dict[str, TestClient], database: Database,
                                               people: dict[str, Any], slack: SlackStandIn) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    payload = button_click(slack, approver_message(slack, "approver@example.com", request_id), "approve", "U01APPROVER")
    for refused in (click(clients["member"], payload, secret="not-the-signing-secret"),
                    click(clients["member"], payload, age=5 * 60 + 30),  # a replay, signed 5.5 minutes ago
                    click(clients["member"], payload, age=-(5 * 60 + 30)),
                    click(clients["member"], payload, timestamp="soon"),
                    clients["member"].post("/slack/actions", data={"payload": json.dumps(payload)})):
        assert refused.status_code == 401 and "nothing was done" in refused.json()["error"]
    tampered = urlencode({"payload": json.dumps(payload)})
    stamp = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=stamp, body=tampered)
    other = tampered.replace("U01APPROVER", "U02APPROVER")
    answer = clients["member"].post("/slack/actions", content=other, headers={
        "Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": signature or ""})
    assert answer.status_code == 401
    time.sleep(0.3)  # a click that got through would be applied by now
    assert status_of(database, request_id) == "requested" and approvals(database, request_id) == []
    assert slack.users_info_calls == [] and slack.replies == []


def test_who_cannot_decide_is_told_why_alone(clients: dict[str, TestClient], database: Database,
                                            people: dict[str, Any], slack: SlackStandIn) -> None:
    request_id = submit(clients["member"], make_resource(database, people))
    message = approver_message(slack, "approver@example.com", request_id)
    for n, (user, why) in enumerate([("U04STRANGER", "matches no active Gatehouse account"),
                                     ("U03MEMBER", "You cannot decide on your own request."),
                                     ("U99UNKNOWN", "matches no active Gatehouse account"),
                                     ("U03MEMBER", "You cannot decide on your own request.")]):
        assert click(clients["member"], button_click(slack, message, "approve", user)).status_code == 200
        reply = wait_for(lambda: slack.replies[n:], what=f"the explanation to {user}")[0]
        assert reply["response_type"] == "ephemeral" and why in reply["text"], reply
    assert slack.users_info_calls.count("U03MEMBER") == 1, "the Slack user's email is cached"
    assert status_of(database, request_id) == "requested" and approvals(database, request_id) == []
    assert not slack.views
