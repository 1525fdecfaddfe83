"""Decisions from Slack's buttons: the decision goes to the request's workflow through the
same path as the web (`webapp.workflows.access.send_decision`, channel "slack"), and a small
durable workflow tells Slack what it did.

    decide_from_slack(...)            checks and sends the decision (durably), starts the reply,
                                      and returns at once: Slack wants an answer within 3 s
    slack_reply_workflow(...)         waits for the request workflow's answer, then replaces
      1. DBOS.get_event               the clicked message with who decided and the outcome,
      2. post_reply (step, retried)   or tells only the clicker why nothing changed

A crash after the click was acknowledged loses neither the decision (DBOS has the message)
nor the reply (the reply workflow resumes).
"""

from __future__ import annotations

from typing import Any

from dbos import DBOS
from slack_sdk.webhook import WebhookClient

from webapp.core.db import Database
from webapp.services.access import DecisionKind, DecisionOutcome
from webapp.services.identity import Principal
from webapp.services.notifications import request_url
from webapp.services.slack_messages import decided, ephemeral
from webapp.workflows.access import ANSWER_SECONDS, message_event, send_decision
from webapp.workflows.notifications import OUTBOX
from webapp.workflows.runtime import start_workflow

REPLY_WAIT_SECONDS = 6 * ANSWER_SECONDS  # the request workflow answers in well under a second


class ReplyRefused(Exception):
    """Slack did not take the reply (its response_url answers with a non-200)."""


def post_reply(response_url: str, body: dict[str, Any]) -> None:
    response = WebhookClient(response_url, timeout=10).send_dict(body)
    if response.status_code != 200:
        raise ReplyRefused(f"{response.status_code}: {response.body[:200]}")


@DBOS.workflow()
def slack_reply_workflow(request_workflow_id: str, message_id: str, response_url: str, request_id: int,
                         kind: DecisionKind, who: str, original: list[dict[str, Any]]) -> str:
    outcome: DecisionOutcome | None = DBOS.get_event(request_workflow_id, message_event(message_id),
                                                     timeout_seconds=REPLY_WAIT_SECONDS)
    if outcome is None:
        body = ephemeral(f"Your decision on request #{request_id} was received; open the request to see it applied.")
    elif not outcome["applied"]:
        body = ephemeral(f"Nothing changed: {outcome['note']}.")
    else:
        body = decided(original, request_id=request_id, kind=kind, who=who, outcome=outcome,
                       link=request_url(OUTBOX.settings.base_url, request_id))
    DBOS.run_step({"name": "slack.reply", "retries_allowed": True, "max_attempts": 5, "interval_seconds": 1.0},
                  post_reply, response_url, body)
    return "applied" if outcome and outcome["applied"] else "not applied"


async def decide_from_slack(database: Database, principal: Principal, request_id: int, kind: DecisionKind,
                            comment: str, *, response_url: str, original: list[dict[str, Any]]) -> None:
    """Send the decision, then reply to Slack in the background. AccessError (403, 404, 409)
    when it cannot be sent: the caller tells the clicker why."""
    sent = await send_decision(database, principal, request_id, kind, comment, via="slack")
    await start_workflow(f"slack-reply-{sent.message_id}", slack_reply_workflow, sent.workflow_id, sent.message_id,
                         response_url, request_id, kind, principal.email, original)
