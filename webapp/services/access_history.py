"""Who had access to a resource at a given moment, answered from the grants.

A grant covers the moment T when it was granted at or before T and had neither been
revoked nor expired by T. Each answer row says how the grant ended (revoked early, expired,
or still active), which request it came from and who approved that request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from pydantic import field_validator
from sqlalchemy.orm import Session, aliased

from webapp.core.forms import FormModel, in_utc
from webapp.core.models import Approval, AuditEvent, Decision, Grant, User
from webapp.services.audit import Action

MAX_ROWS = 500


class AccessAtQuery(FormModel):
    """`at`: an ISO time; without a zone (what a datetime-local field sends) it is UTC.
    Empty means now."""

    at: datetime | None = None

    @field_validator("at", mode="before")
    @classmethod
    def _empty_is_now(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("at")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else in_utc(value)


@dataclass(frozen=True)
class Holder:
    grant_id: int
    user_id: int
    name: str
    email: str
    granted_at: datetime
    ended_at: datetime | None  # when the grant stopped, or stops (expiry still ahead); None: permanent
    ended: str  # "revoked", "expired" or "active" (as of now)
    revoked_by: str | None  # who revoked it early, when a person did
    request_id: int | None
    approved_by: list[str]  # the people whose approval counted, in order
    auto_approved: bool


@dataclass(frozen=True)
class AccessAt:
    at: datetime
    holders: list[Holder]
    more: bool  # more than MAX_ROWS people held it; only the first MAX_ROWS are listed


def _ending(grant: Grant, now: datetime) -> tuple[datetime | None, str]:
    """When the grant ends (the earlier of its revocation and its expiry) and why, as of now.
    The workflow revokes an expired grant at its expiry time, so a revocation at or after
    the expiry is the expiry."""
    if grant.expires_at is not None and (grant.revoked_at is None or grant.expires_at <= grant.revoked_at):
        return grant.expires_at, "expired" if grant.expires_at <= now else "active"
    if grant.revoked_at is not None:
        return grant.revoked_at, "revoked"
    return None, "active"


def holders_at(session: Session, resource_id: int, at: datetime, *, now: datetime) -> AccessAt:
    """Everyone whose grant on `resource_id` covered the moment `at`, by name."""
    revoker = aliased(User)
    rows = session.execute(
        sa.select(Grant, User.name, User.email, revoker.name)
        .join(User, User.id == Grant.user_id)
        .outerjoin(revoker, revoker.id == Grant.revoked_by_id)
        .where(Grant.resource_id == resource_id, Grant.granted_at <= at,  # type: ignore[operator]
               sa.or_(Grant.revoked_at.is_(None), Grant.revoked_at > at),  # type: ignore[union-attr, operator]
               sa.or_(Grant.expires_at.is_(None), Grant.expires_at > at))  # type: ignore[union-attr, operator]
        .order_by(User.name, Grant.granted_at, Grant.id)
        .limit(MAX_ROWS + 1)
    ).all()
    rows, more = rows[:MAX_ROWS], len(rows) > MAX_ROWS
    request_ids = [grant.request_id for grant, *_ in rows if grant.request_id is not None]
    approvers: dict[int, list[str]] = {}
    auto: set[int] = set()
    if request_ids:
        for request_id, name in session.execute(
            sa.select(Approval.request_id, User.name).join(User, User.id == Approval.approver_id)
            .where(Approval.request_id.in_(request_ids), Approval.decision == Decision.approve,  # type: ignore[attr-defined]
                   Approval.counted).order_by(Approval.id)
        ):
            approvers.setdefault(request_id, []).append(name)
        subjects = [f"request:{request_id}" for request_id in request_ids]
        auto = {int(subject.removeprefix("request:")) for subject in session.scalars(
            sa.select(AuditEvent.subject).where(AuditEvent.subject.in_(subjects),  # type: ignore[attr-defined]
                                                AuditEvent.action == Action.REQUEST_AUTO_APPROVED))}
    holders = []
    for grant, name, email, revoked_by in rows:
        ended_at, ended = _ending(grant, now)
        holders.append(Holder(
            grant_id=grant.id, user_id=grant.user_id, name=name, email=email, granted_at=grant.granted_at,
            ended_at=ended_at, ended=ended, revoked_by=revoked_by if ended == "revoked" else None,
            request_id=grant.request_id, approved_by=approvers.get(grant.request_id, []) if grant.request_id else [],
            auto_approved=grant.request_id in auto))
    return AccessAt(at=at, holders=holders, more=more)
