"""Approve and reject links in approvers' emails.

A link is signed (itsdangerous, with the app's secret), bound to one request, one approver
(by email) and one decision, and expires when the request stops waiting. Opening it changes
nothing: mail scanners open links. The page it opens shows the request and a form, and the
decision is that form's POST by the signed-in approver, through the same workflow path as the
web (`webapp.workflows.access.decide`, channel "email"). The decision spends the link in its own
transaction (a `DecisionLinkUse` row), so a link decides at most once.

The same request, approver and decision always give the same link: the workflow that writes
the email may run again after a crash, and its message must not change.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

import sqlalchemy as sa
from itsdangerous import BadSignature, URLSafeSerializer
from sqlalchemy.orm import Session

from webapp.core.models import AccessRequest, DecisionLinkUse, RequestStatus, User
from webapp.services.access import AccessError
from webapp.services.identity import Principal

LinkDecision = Literal["approve", "reject"]
DECISIONS: tuple[LinkDecision, ...] = ("approve", "reject")
SALT = "gatehouse.decision-link"
PATH = "/decide/"
MAX_TOKEN = 400  # a real one is about 120 characters
NOT_VALID = "This decision link is not valid. Open the request from Gatehouse instead."


@dataclass(frozen=True)
class DecisionLink:
    request_id: int
    approver: str  # the approver's email, as the message was addressed
    decision: LinkDecision
    expires_at: float  # epoch seconds: when the request stops waiting
    link_id: str  # names the link in the audit and in decision_link_uses

    @property
    def expires(self) -> datetime:
        return datetime.fromtimestamp(self.expires_at, UTC)


def _serializer(secret: str) -> URLSafeSerializer:
    return URLSafeSerializer(secret, salt=SALT)


def link_token(secret: str, request_id: int, approver: str, decision: LinkDecision, expires_at: float) -> str:
    return str(_serializer(secret).dumps([request_id, approver.strip().lower(), decision, int(expires_at)]))


def decision_urls(secret: str, base_url: str, request_id: int, approver: str,
                  expires_at: float) -> tuple[tuple[str, str], ...]:
    """(decision, absolute URL) for each decision an approver's email offers."""
    return tuple((decision, f"{base_url.rstrip('/')}{PATH}{link_token(secret, request_id, approver, decision, expires_at)}")
                 for decision in DECISIONS)


def read_link(secret: str, token: str) -> DecisionLink:
    """The link a token stands for, or AccessError 404 for anything not signed by us."""
    if len(token) > MAX_TOKEN:
        raise AccessError(404, NOT_VALID)
    try:
        request_id, approver, decision, expires_at = _serializer(secret).loads(token)
    except (BadSignature, ValueError, TypeError) as error:
        raise AccessError(404, NOT_VALID) from error
    if not (isinstance(request_id, int) and isinstance(approver, str) and decision in DECISIONS
            and isinstance(expires_at, int)):
        raise AccessError(404, NOT_VALID)
    return DecisionLink(request_id, approver, decision, float(expires_at),
                        hashlib.sha256(token.encode()).hexdigest()[:32])


def check_link(session: Session, link: DecisionLink, principal: Principal, *, now: datetime) -> AccessRequest:
    """The request a link may decide now, by this person; or AccessError saying what happened:
    403 someone else's link (before anything about the request is told), 409 used or decided
    already, 410 expired."""
    if principal.email.strip().lower() != link.approver:
        raise AccessError(403, f"This link was sent to another approver; you are signed in as {principal.email}. "
                               "Sign out and sign in as the person it was sent to.")
    request = session.get(AccessRequest, link.request_id)
    if request is None:
        raise AccessError(404, f"No request #{link.request_id}.")
    used = session.get(DecisionLinkUse, link.link_id)
    if used is not None:
        raise AccessError(409, f"This link was used on {used.used_at:%Y-%m-%d %H:%M} UTC: you "
                               f"{_past(used.decision)} request #{request.id}, which is now {request.status}.")
    if now.timestamp() >= link.expires_at or request.status == RequestStatus.expired:
        raise AccessError(410, f"This link expired on {link.expires:%Y-%m-%d %H:%M} UTC, when request "
                               f"#{request.id} stopped waiting for decisions.")
    if request.status != RequestStatus.requested:
        raise AccessError(409, f"Request #{request.id} is already {request.status}{_by(session, request)}; "
                               "this link changes nothing now.")
    return request


def _past(decision: str) -> str:
    return {"approve": "approved", "reject": "rejected"}.get(decision, decision)


def _by(session: Session, request: AccessRequest) -> str:
    if request.decided_by_id is None:
        return ""
    email = session.scalar(sa.select(User.email).where(User.id == request.decided_by_id))
    when = f" on {request.decided_at:%Y-%m-%d %H:%M} UTC" if request.decided_at else ""
    return f" (by {email}{when})"
