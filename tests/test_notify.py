"""Notification delivery through a launched DBOS, to real receivers on loopback:
an SMTP server (aiosmtpd) and a webhook that can fail its first K calls."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from support.receivers import HttpReceiver, SmtpReceiver
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AccessRequest, ErrorRecord, Notification, Resource, User
from webapp.services.notifications import (
    Message,
    dedup_key,
    email_message,
    message_id,
    request_url,
    slack_payload,
)
from webapp.workflows.notifications import DEDUP_HEADER, delivery_workflow_id, send_notifications

BASE_URL = "https://gatehouse.example.test"
FINISHED = ("SUCCESS", "ERROR", "CANCELLED", "MAX_RECOVERY_ATTEMPTS_EXCEEDED")


@DBOS.workflow(name="tests.notify.send_notifications")
def notify_from_workflow(messages: list[Message], calls: int = 1) -> list[str]:
    """Stands in for the access workflow: asks for notifications, `calls` times."""
    ids: list[str] = []
    for _ in range(calls):
        ids = send_notifications(messages)
    return ids


Launch = Callable[..., TestClient]


@pytest.fixture
def launch(settings: Settings) -> Iterator[Launch]:
    """Start the app (and so DBOS) with these setting overrides; fast retries by default.
    Launching again stops the running app first, as a restart does; the databases stay."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> TestClient:
            stack.close()
            values: dict[str, Any] = {
                "base_url": BASE_URL,
                "notify_max_attempts": 3,
                "notify_retry_interval_seconds": 0.01,
                "notify_backoff_rate": 2.0,
                "notify_timeout_seconds": 5.0,
                "slack_rate_limit": 1000,
                **overrides,
            }
            app = create_app(settings.model_copy(update=values))
            return stack.enter_context(TestClient(app, base_url="http://testserver"))

        yield start


def wait_for(workflow_ids: list[str], timeout: float = 10.0) -> list[Any]:
    """The results of these workflows, once each has finished (or fail at the deadline)."""
    deadline = time.monotonic() + timeout
    results = []
    for workflow_id in workflow_ids:
        while (status := workflow_status(workflow_id)) not in FINISHED:
            assert time.monotonic() < deadline, f"{workflow_id} is still {status}"
            time.sleep(0.02)
        results.append(DBOS.retrieve_workflow(workflow_id).get_result(polling_interval_sec=0.02))
    return results


def workflow_status(workflow_id: str) -> str | None:
    status = DBOS.get_workflow_status(workflow_id)
    return None if status is None else status.status


def request_notifications(
    messages: list[Message], *, calls: int = 1, workflow_id: str | None = None
) -> list[str]:
    """Run the stand-in workflow; returns the delivery ids it enqueued, without waiting."""
    if workflow_id is None:
        handle = DBOS.start_workflow(notify_from_workflow, messages, calls)
    else:
        with SetWorkflowID(workflow_id):
            handle = DBOS.start_workflow(notify_from_workflow, messages, calls)
    return handle.get_result(polling_interval_sec=0.02)


def notify(messages: list[Message], *, calls: int = 1, workflow_id: str | None = None) -> list[str]:
    """Run the stand-in workflow and wait for every delivery it enqueued."""
    ids = request_notifications(messages, calls=calls, workflow_id=workflow_id)
    wait_for(ids)
    return ids


def make_request(database: Database) -> int:
    """An access request row, for the foreign keys of notifications and error records."""
    with database.session() as session:
        user = User(email="ada@example.test", name="Ada")
        resource = Resource(name="billing-db")
        session.add_all([user, resource])
        session.flush()
        assert user.id is not None and resource.id is not None
        request = AccessRequest(
            requester_id=user.id, resource_id=resource.id, reason="incident", workflow_id="access-1"
        )
        session.add(request)
        session.flush()
        assert request.id is not None
        return request.id


def message_for(request_id: int, recipient: str, event: str = "request.submitted") -> Message:
    return Message(
        request_id=request_id,
        event=event,
        recipient=recipient,
        subject=f"Access request #{request_id} needs your decision",
        body="Ada asks for billing-db for 8 hours: incident.",
        link=request_url(BASE_URL, request_id),
    )


def notifications(database: Database) -> list[Notification]:
    with database.session() as session:
        rows = session.execute(sa.select(Notification).order_by(Notification.id)).scalars()
        return list(rows)


def error_records(database: Database) -> list[ErrorRecord]:
    with database.session() as session:
        return list(session.execute(sa.select(ErrorRecord).order_by(ErrorRecord.id)).scalars())


# Composition: pure functions.


def test_dedup_key_names_channel_request_event_and_recipient() -> None:
    message = message_for(7, "bob@example.test")
    assert dedup_key("email", message) == "email:7:request.submitted:bob@example.test"
    assert delivery_workflow_id("slack", message) == (
        "notify:slack:7:request.submitted:bob@example.test"
    )
    long = message_for(7, "x" * 300 + "@example.test")
    assert dedup_key("email", long).startswith("email:sha256:")
    assert len(dedup_key("email", long)) <= 300


def test_slack_text_escapes_user_text_and_carries_the_key() -> None:
    message = Message(
        1, "request.submitted", "bob@example.test", "a <b> & c", "x <!channel>", f"{BASE_URL}/requests/1"
    )
    payload = slack_payload(message, "slack:1:request.submitted:bob@example.test")
    assert "<!channel>" not in payload["text"]
    assert "a &lt;b&gt; &amp; c" in payload["text"]
    assert f"<{BASE_URL}/requests/1|Open the request>" in payload["text"]
    assert payload["dedup_key"] == "slack:1:request.submitted:bob@example.test"


def test_email_subject_is_one_line_and_message_id_is_deterministic() -> None:
    message = Message(
        1, "request.submitted", "bob@example.test", "line one\nBcc: eve@x", "body", "https://x/requests/1"
    )
    email = email_message(message, sender="gatehouse@example.test", key="email:1:k")
    assert email["Subject"] == "line one Bcc: eve@x"
    assert email["Bcc"] is None
    assert email["Message-ID"] == message_id("email:1:k") == message_id("email:1:k")
    assert email["Message-ID"] != message_id("email:2:k")


# Delivery through DBOS.


def test_outbox_is_the_default_channel(launch: Launch, database: Database) -> None:
    launch()
    request_id = make_request(database)
    message = message_for(request_id, "bob@example.test")

    ids = notify([message])

    assert ids == [delivery_workflow_id("outbox", message)]
    [row] = notifications(database)
    assert (row.channel, row.status, row.attempts, row.request_id) == ("outbox", "sent", 1, request_id)
    assert row.recipient == "bob@example.test"
    assert row.subject == message.subject
    assert row.body.endswith(f"{BASE_URL}/requests/{request_id}")
    assert row.sent_at is not None


def test_slack_and_email_each_receive_one_message_with_the_link(
    launch: Launch, database: Database, smtp_server: SmtpReceiver, webhook_server: HttpReceiver
) -> None:
    launch(
        slack_webhook_url=webhook_server.url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_starttls=False,
        smtp_from="gatehouse@example.test",
    )
    request_id = make_request(database)
    messages = [message_for(request_id, "bob@example.test"), message_for(request_id, "cy@example.test")]

    ids = notify(messages)

    assert len(ids) == 6  # two messages, three channels
    link = f"{BASE_URL}/requests/{request_id}"
    assert sorted(post.body["dedup_key"] for post in webhook_server.received) == sorted(
        dedup_key("slack", m) for m in messages
    )
    for post in webhook_server.received:
        assert post.path == "/hooks/slack"
        assert post.headers[DEDUP_HEADER] == post.body["dedup_key"]
        assert link in post.body["text"]

    by_recipient = {received.rcpt_tos[0]: received for received in smtp_server.received}
    assert sorted(by_recipient) == ["bob@example.test", "cy@example.test"]
    for message in messages:
        received = by_recipient[message.recipient]
        assert received.mail_from == "gatehouse@example.test"
        assert received.message["Message-ID"] == message_id(dedup_key("email", message))
        assert received.message["X-Gatehouse-Dedup-Key"] == dedup_key("email", message)
        assert received.message["Subject"] == message.subject
        assert link in received.message.get_content()
        assert received.login is None

    rows = notifications(database)
    assert sorted((r.channel, r.recipient, r.status) for r in rows) == sorted(
        (channel, m.recipient, "sent") for channel in ("slack", "email", "outbox") for m in messages
    )
    assert all(r.attempts == 1 for r in rows)


def test_repeated_calls_and_reruns_deliver_once(
    launch: Launch, database: Database, smtp_server: SmtpReceiver, webhook_server: HttpReceiver
) -> None:
    launch(
        slack_webhook_url=webhook_server.url,
        smtp_host="127.0.0.1",
        smtp_port=smtp_server.port,
        smtp_starttls=False,
    )
    message = message_for(make_request(database), "bob@example.test")

    first = notify([message], calls=2, workflow_id="access-flow-1")  # asks twice in one run
    again = notify([message], workflow_id="access-flow-1")  # the same workflow started again
    other = notify([message])  # another workflow asking for the same (request, recipient, event)
    forked = DBOS.fork_workflow("access-flow-1", 1)  # a replay from its first step
    assert forked.get_result(polling_interval_sec=0.02) == first

    assert first == again == other
    assert len(webhook_server.received) == 1
    assert len(smtp_server.received) == 1
    assert len(notifications(database)) == 3


def test_a_second_delivery_run_of_a_sent_message_does_not_resend(
    launch: Launch, database: Database, webhook_server: HttpReceiver
) -> None:
    """A fork of the delivery workflow itself (new id, same dedup key) finds the row sent."""
    launch(slack_webhook_url=webhook_server.url)
    message = message_for(make_request(database), "bob@example.test")
    notify([message])

    forked = DBOS.fork_workflow(delivery_workflow_id("slack", message), 1)

    assert forked.get_result(polling_interval_sec=0.02) == "sent"
    assert len(webhook_server.received) == 1


def test_slack_failing_first_calls_is_retried_until_it_succeeds(
    launch: Launch, database: Database, webhook_server: HttpReceiver
) -> None:
    launch(slack_webhook_url=webhook_server.url, notify_max_attempts=4)
    webhook_server.fail_first = 2
    message = message_for(make_request(database), "bob@example.test")

    notify([message])

    assert len(webhook_server.attempts) == 3
    assert len(webhook_server.received) == 1
    # Every try is the same message: a receiver can drop a repeat by its key.
    assert {post.headers[DEDUP_HEADER] for post in webhook_server.attempts} == {dedup_key("slack", message)}
    slack = next(r for r in notifications(database) if r.channel == "slack")
    assert (slack.status, slack.attempts, slack.last_error) == ("sent", 3, None)
    assert error_records(database) == []


def test_slack_failing_always_marks_it_failed_and_records_the_error(
    launch: Launch, database: Database, webhook_server: HttpReceiver
) -> None:
    launch(slack_webhook_url=webhook_server.url, notify_max_attempts=3)
    webhook_server.fail_first = 1000
    request_id = make_request(database)
    message = message_for(request_id, "bob@example.test")

    ids = notify([message])

    assert wait_for(ids) == ["failed", "sent"]  # slack gave up; the outbox still has it
    assert len(webhook_server.attempts) == 3
    slack = next(r for r in notifications(database) if r.channel == "slack")
    assert (slack.status, slack.attempts) == ("failed", 3)
    assert slack.last_error is not None and slack.last_error.startswith("HTTPStatusError")
    [record] = error_records(database)
    assert record.source == "notify.slack"
    assert record.workflow_id == delivery_workflow_id("slack", message)
    assert record.request_id == request_id
    assert record.message["error_type"] == "HTTPStatusError"
    assert "500" in record.message["error"]
    assert record.message | {"error": "", "error_type": ""} == {
        "error": "",
        "error_type": "",
        "channel": "slack",
        "recipient": "bob@example.test",
        "event": "request.submitted",
        "dedup_key": dedup_key("slack", message),
        "attempts": 3,
        "transient": True,
    }


def test_a_permanent_error_is_not_retried(
    launch: Launch, database: Database, webhook_server: HttpReceiver
) -> None:
    """A 404 (a revoked webhook) fails the same way every time: one call, then failed."""
    launch(slack_webhook_url=webhook_server.url, notify_max_attempts=5)
    webhook_server.fail_first, webhook_server.failure_status = 1000, 404
    message = message_for(make_request(database), "bob@example.test")

    notify([message])

    assert len(webhook_server.attempts) == 1
    slack = next(r for r in notifications(database) if r.channel == "slack")
    assert (slack.status, slack.attempts) == ("failed", 1)
    [record] = error_records(database)
    assert record.message["transient"] is False


def test_email_retries_a_temporary_refusal_and_logs_in_when_a_user_is_set(
    launch: Launch, database: Database
) -> None:
    server = SmtpReceiver(credentials=("mailer", "s3cret"), fail_first=1)
    server.start()
    try:
        launch(
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_starttls=False,
            smtp_user="mailer",
            smtp_password="s3cret",
        )
        message = message_for(make_request(database), "bob@example.test")
        notify([message])
    finally:
        server.stop()

    [received] = server.received
    assert received.login == "mailer"
    refused, accepted = server.attempts
    assert refused.message["Message-ID"] == accepted.message["Message-ID"]
    email = next(r for r in notifications(database) if r.channel == "email")
    assert (email.status, email.attempts) == ("sent", 2)


def test_queued_deliveries_survive_a_restart(
    launch: Launch, database: Database, webhook_server: HttpReceiver
) -> None:
    """The Slack queue's rate limit holds the second message back; the app stops with it
    still queued, and the next start delivers it, once."""
    launch(slack_webhook_url=webhook_server.url, slack_rate_limit=1, slack_rate_period=60.0)
    request_id = make_request(database)
    messages = [message_for(request_id, "bob@example.test"), message_for(request_id, "cy@example.test")]
    ids = request_notifications(messages)
    slack_ids = [i for i in ids if i.startswith("notify:slack:")]
    wait_for([i for i in ids if i not in slack_ids])
    deadline = time.monotonic() + 10
    while sorted(workflow_status(i) or "" for i in slack_ids) != ["ENQUEUED", "SUCCESS"]:
        assert time.monotonic() < deadline, [workflow_status(i) for i in slack_ids]
        time.sleep(0.02)
    assert len(webhook_server.received) == 1

    launch(slack_webhook_url=webhook_server.url)  # a restart, with the default test limits

    assert wait_for(slack_ids) == ["sent", "sent"]
    assert sorted(post.body["dedup_key"] for post in webhook_server.received) == sorted(
        dedup_key("slack", m) for m in messages
    )


def test_queue_limits_come_from_the_settings(launch: Launch) -> None:
    launch(
        slack_concurrency=2,
        slack_rate_limit=3,
        slack_rate_period=4.0,
        email_concurrency=6,
        email_rate_limit=70,
        email_rate_period=20.0,
        outbox_concurrency=9,
    )
    slack, email, outbox = (DBOS.retrieve_queue(name) for name in ("slack", "email", "outbox"))
    assert slack is not None and email is not None and outbox is not None
    assert (slack.worker_concurrency, slack.limiter) == (2, {"limit": 3, "period": 4.0})
    assert (email.worker_concurrency, email.limiter) == (6, {"limit": 70, "period": 20.0})
    assert (outbox.worker_concurrency, outbox.limiter) == (9, None)


def test_default_queue_limits_match_the_issue() -> None:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert (settings.slack_rate_limit, settings.slack_rate_period) == (1, 1.0)
    assert (settings.email_rate_limit, settings.email_rate_period) == (50, 30.0)
