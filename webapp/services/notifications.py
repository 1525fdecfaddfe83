"""What a notification says, how each channel spells it, and the outbox as admins read it.

Delivery (`webapp.workflows.notifications`) decides when and where a message goes; this
module decides what goes: the message itself, its idempotency key, the `Message-ID`
derived from that key, the Slack payload, the email, and the text the outbox stores.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default as default_policy
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import Notification
from webapp.services.slack_messages import escape

# Longest readable dedup key; longer ones are hashed (the column holds 300 characters).
MAX_READABLE_KEY = 200
SUBJECT_MAX = 300
BODY_MAX = 10_000
# RFC 5322's hard line limit: keeps the Message-ID and the dedup key on one unencoded line
# (the default 78 would fold the one and RFC 2047-encode the other).
EMAIL_POLICY = default_policy.clone(max_line_length=998)


@dataclass(frozen=True)
class Message:
    """One notification for one person about one event. Plain values only, so DBOS can
    record it as a workflow input and replay it."""

    request_id: int | None
    event: str  # "request.submitted", "request.approved", "grant.expiring", ...
    recipient: str  # the person's email address
    subject: str
    body: str  # plain text
    link: str  # absolute URL of the request page
    run: str = ""  # "fork-<hex>" when a forked workflow sends it: an operator asked for it again
    # (decision, URL) for an approver: emailed links (webapp.services.decision_links), and the
    # Slack buttons that send the same decisions (webapp.web.slack)
    actions: tuple[tuple[str, str], ...] = ()


def request_url(base_url: str, request_id: int) -> str:
    """The absolute link to a request's page, as every message carries it."""
    return f"{base_url.rstrip('/')}/requests/{request_id}"


def dedup_key(channel: str, message: Message) -> str:
    """The identity of one delivery: (channel, request, event, recipient), and the fork that
    sends it, if any.

    Readable where it fits, so an operator can grep for it; hashed when a long address
    would overflow the column. Repeating events need a distinct `event` (for example
    "request.reminder.2"), since the key sends each one once.
    """
    request = "-" if message.request_id is None else str(message.request_id)
    key = f"{channel}:{request}:{message.event}:{message.recipient.strip()}"
    if message.run:
        key += f":{message.run}"
    if len(key) <= MAX_READABLE_KEY:
        return key
    return f"{channel}:sha256:{hashlib.sha256(key.encode()).hexdigest()}"


def message_id(key: str) -> str:
    """A `Message-ID` that depends on the dedup key only, so a resent email is
    recognisably the same email."""
    return f"<{hashlib.sha256(key.encode()).hexdigest()}@gatehouse>"


def one_line(text: str) -> str:
    """Collapse line breaks and runs of spaces: a header or a title is one line."""
    return " ".join(text.split())


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


ACTION_LABELS = {"approve": "Approve", "reject": "Reject"}


def text_with_links(message: Message) -> str:
    """The text of an email or the outbox: the body, the request's link, and the approver's
    decision links, each of which opens a page to confirm on."""
    text = f"{message.body.rstrip()}\n\n{message.link}"
    if message.actions:
        text += "\n\n" + "\n".join(f"{ACTION_LABELS.get(kind, kind)}: {url}" for kind, url in message.actions)
        text += "\n\nEach link opens a page where you confirm; it works once, until the request stops waiting."
    return text


def outbox_text(message: Message) -> str:
    """What the outbox stores as the body: the text and the links, as an email would show them."""
    return clip(text_with_links(message), BODY_MAX)


def slack_payload(message: Message, key: str) -> dict[str, Any]:
    """The incoming-webhook JSON: the text, plus the dedup key for receivers that look for
    repeats (Slack ignores fields it does not know). An approver's message also carries Block
    Kit buttons; a click comes back to POST /slack/actions with the request id as its value."""
    text = (
        f"*{escape(one_line(message.subject))}*\n"
        f"{escape(message.body.rstrip())}\n"
        f"<{message.link}|Open the request> · for {escape(message.recipient)}"
    )
    payload: dict[str, Any] = {"text": text, "dedup_key": key}
    if message.actions and message.request_id is not None:
        payload["blocks"] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "actions", "block_id": f"decide:{message.request_id}", "elements": [
                {"type": "button", "action_id": kind, "value": str(message.request_id),
                 "text": {"type": "plain_text", "text": ACTION_LABELS.get(kind, kind)},
                 "style": "primary" if kind == "approve" else "danger"}
                for kind, _ in message.actions]},
        ]
    return payload


def email_message(message: Message, *, sender: str, key: str) -> EmailMessage:
    """The email for one message; its `Message-ID` comes from the dedup key."""
    email = EmailMessage(policy=EMAIL_POLICY)
    email["Subject"] = clip(one_line(message.subject), SUBJECT_MAX)
    email["From"] = sender
    email["To"] = message.recipient.strip()
    email["Message-ID"] = message_id(key)
    email["Auto-Submitted"] = "auto-generated"
    email["X-Gatehouse-Dedup-Key"] = key
    email.set_content(text_with_links(message) + "\n")
    return email


def outbox(session: Session, *, channel: str = "", status: str = "", limit: int = 200) -> list[Notification]:
    """The latest messages on every channel (or one), with their delivery status."""
    query = sa.select(Notification).order_by(Notification.id.desc()).limit(limit)  # type: ignore[union-attr]
    if channel:
        query = query.where(Notification.channel == channel)
    if status:
        query = query.where(Notification.status == status)
    return list(session.scalars(query).all())
