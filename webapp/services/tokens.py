"""API tokens: personal, expiring, scoped bearer secrets for curl and scripts.

A token acts as its person, so only that person issues it: an admin who could mint a token
for an approver could approve their own request under the approver's name. The one
exception is a service account (an account for scripts, which never decides requests):
admins issue and hold its tokens. Every token expires (TOKEN_MAX_DAYS at most) and carries
scopes, read / decide / operate, which its person's role limits further. The database keeps
only the secret's SHA-256; the audit rows written with a token name it (audit.token_id).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.errors import Refusal
from webapp.core.models import ApiToken, Role, TokenScope, User
from webapp.services.audit import Action, record_event
from webapp.services.identity import TOUCH_EVERY, Principal, digest, principal_of

TOKEN_PREFIX = "gh_"
DEFAULT_DAYS = 30
PERSONAL = ("Tokens are personal: each person issues their own from their account page. "
            "Admins issue tokens only for service accounts.")


class TokenRefused(Refusal):
    status_code = 422


def scopes_for(user: User) -> frozenset[str]:
    """The scopes a token of `user` can carry: reading always; deciding for people (not
    service accounts); operating for admins."""
    scopes = {TokenScope.read.value}
    if not user.is_service:
        scopes.add(TokenScope.decide.value)
    if user.role == Role.admin:
        scopes.add(TokenScope.operate.value)
    return frozenset(scopes)


def may_issue_for(issuer: Principal, user: User) -> bool:
    return issuer.id == user.id or (issuer.is_admin and user.is_service)


@dataclass(frozen=True)
class TokenRequest:
    name: str
    scopes: frozenset[str]
    days: int


def check_request(user: User, wanted: TokenRequest, *, issuer: Principal, max_days: int) -> None:
    """Why this token may not be issued (TokenRefused), or nothing."""
    if issuer.via_token:
        raise TokenRefused("Issue tokens from a signed-in browser, not with another token.", 403)
    if not may_issue_for(issuer, user):
        raise TokenRefused(PERSONAL, 403)
    if not user.active:
        raise TokenRefused("Activate this account before issuing a token.", 409)
    if not wanted.name.strip():
        raise TokenRefused("Give the token a name that says where it is used.", field="name")
    unknown = wanted.scopes - {s.value for s in TokenScope}
    if unknown or not wanted.scopes:
        raise TokenRefused("Choose at least one scope: read, decide or operate.", field="scopes")
    beyond = wanted.scopes - scopes_for(user)
    if TokenScope.decide in beyond:
        raise TokenRefused("A service account cannot decide requests, so its tokens cannot carry decide.",
                           field="scopes")
    if beyond:
        raise TokenRefused("Only an admin's tokens may carry operate.", field="scopes")
    if not 1 <= wanted.days <= max_days:
        raise TokenRefused(f"A token lives from 1 to {max_days} days.", field="days")


def issue_token(session: Session, *, user: User, issued_by: Principal, now: datetime, name: str,
                scopes: Iterable[str] | None = None, days: int = DEFAULT_DAYS,
                max_days: int = 90) -> tuple[ApiToken, str]:
    """A new bearer token (every scope `user` can hold unless `scopes` says fewer); the
    secret is returned once and never stored. TokenRefused when the rules above say no."""
    wanted = TokenRequest(name, frozenset(scopes) if scopes is not None else scopes_for(user), days)
    check_request(user, wanted, issuer=issued_by, max_days=max_days)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(user_id=user.id, name=name.strip(), token_hash=digest(secret),  # type: ignore[arg-type]
                     prefix=secret[:10], created_at=now, created_by_id=issued_by.id,
                     expires_at=now + timedelta(days=days), scopes=",".join(sorted(wanted.scopes)))
    session.add(token)
    session.flush()
    record_event(session, actor=issued_by.email, actor_id=issued_by.id, action=Action.TOKEN_ISSUED,
                 subject=f"user:{user.id}", details={"token": token.id, "name": token.name, "prefix": token.prefix,
                                                     "scopes": sorted(wanted.scopes), "days": days})
    return token, secret


def revoke_token(session: Session, token: ApiToken, *, revoked_by: Principal, now: datetime) -> None:
    token.revoked_at = now
    record_event(session, actor=revoked_by.email, actor_id=revoked_by.id, action=Action.TOKEN_REVOKED,
                 subject=f"user:{token.user_id}", details={"token": token.id, "prefix": token.prefix})


def revoke_all_tokens(session: Session, user_id: int, *, actor: str, actor_id: int | None, now: datetime) -> int:
    """Revoke every live API token of `user_id` (audited, one event naming them); how many."""
    live = list(session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user_id,
                                                           ApiToken.revoked_at.is_(None))))  # type: ignore[union-attr]
    for token in live:
        token.revoked_at = now
    if live:
        record_event(session, actor=actor, actor_id=actor_id, action=Action.TOKEN_REVOKED, subject=f"user:{user_id}",
                     details={"tokens": [t.id for t in live], "prefixes": [t.prefix for t in live],
                              "why": "the person was deactivated"})
    return len(live)


def tokens_of(session: Session, user_id: int) -> list[ApiToken]:
    return list(session.scalars(sa.select(ApiToken).where(ApiToken.user_id == user_id)
                                .order_by(ApiToken.id.desc())))  # type: ignore[union-attr]


def principal_for_token(session: Session, secret: str, *, now: datetime) -> Principal | None:
    """The person a live token acts as, limited to its scopes; None when the token is
    unknown, revoked, expired, or its person was deactivated."""
    row = session.execute(
        sa.select(ApiToken, User).join(User, User.id == ApiToken.user_id)
        .where(ApiToken.token_hash == digest(secret), ApiToken.revoked_at.is_(None),  # type: ignore[union-attr]
               ApiToken.expires_at > now)
    ).first()
    if row is None or not row[1].active:
        return None
    token, user = row
    if token.last_used_at is None or now - token.last_used_at > TOUCH_EVERY:
        token.last_used_at = now
    return principal_of(user, token_id=token.id, scopes=token.scope_set & scopes_for(user))
