"""Identity: signing in, server-side sessions, and the principal (the roles, and for API
tokens the scopes, a request carries). Tokens themselves: webapp/services/tokens.py.

Sessions and tokens are random secrets; the database stores only their SHA-256, so a
copy of the database cannot be replayed as a login. Every request re-reads the user,
so deactivating someone ends their sessions and tokens at once.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.config import Settings
from webapp.core.emails import normalise_email
from webapp.core.models import LoginAttempt, Role, User, UserSession
from webapp.core.passwords import hash_password, needs_rehash, verify_password
from webapp.services.audit import Action, record_event

ROLE_RANK = {Role.member: 0, Role.approver: 1, Role.admin: 2}
TOUCH_EVERY = timedelta(minutes=1)  # refresh last_seen_at at most this often


@dataclass(frozen=True)
class Principal:
    """Who is making a request, as the authorization layer needs to know it."""

    id: int
    email: str
    name: str
    role: str
    token_id: int | None = None  # the API token this request came with (None: a browser session)
    scopes: frozenset[str] | None = None  # what that token may do (None: everything the role may)
    service: bool = False  # a service account: scripts only, never decides requests
    time_zone: str = ""  # their setting (webapp.web.times); empty: their browser's

    @property
    def via_token(self) -> bool:
        return self.token_id is not None

    def has_scope(self, scope: str) -> bool:
        return self.scopes is None or scope in self.scopes

    def has_role(self, role: str) -> bool:
        return ROLE_RANK[Role(self.role)] >= ROLE_RANK[Role(role)]

    @property
    def is_admin(self) -> bool:
        return self.role == Role.admin


class SignInError(Exception):
    """Sign-in refused. The message is the same for unknown users and wrong passwords."""


class SignInThrottled(SignInError):
    def __init__(self, retry_after: int) -> None:
        wait = f"{retry_after} s" if retry_after < 120 else f"{math.ceil(retry_after / 60)} minutes"
        super().__init__(f"Too many failed sign-ins from here. Wait {wait} and try again.")
        self.retry_after = retry_after


def digest(secret: str) -> str:
    """What the database keeps of a session or token secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def principal_of(user: User, *, token_id: int | None = None, scopes: frozenset[str] | None = None) -> Principal:
    assert user.id is not None
    return Principal(user.id, user.email, user.name, user.role, token_id, scopes, user.is_service, user.time_zone)


# Sign-in ---------------------------------------------------------------------------------

def _failures(session: Session, since: datetime, *where: Any) -> tuple[int, datetime | None]:
    """How many sign-ins failed since `since` under these conditions, and when the last one did."""
    count, last = session.execute(
        sa.select(sa.func.count(), sa.func.max(LoginAttempt.at))
        .where(*where, LoginAttempt.at >= since, LoginAttempt.succeeded.is_(False))  # type: ignore[arg-type]
    ).one()
    return int(count or 0), last


def _wait(failures: int, allowed: int, last: datetime | None, settings: Settings, now: datetime) -> float:
    """Seconds still to wait after `failures` when `allowed` are free: the wait doubles with
    each failure beyond them, from LOGIN_DELAY_SECONDS up to the window."""
    if failures < allowed or last is None:
        return 0.0
    delay = min(settings.login_delay_seconds * 2 ** (failures - allowed), settings.login_attempt_window_seconds)
    return delay - (now - last).total_seconds()


def check_throttle(session: Session, settings: Settings, *, email: str, ip: str, now: datetime) -> None:
    """Refuse before checking the password while this address must wait: it failed too often
    for this account, or for any account (one guesser trying many). Failures elsewhere
    never slow this address down, so nobody can lock an account from afar."""
    since = now - timedelta(seconds=settings.login_attempt_window_seconds)
    pair = _failures(session, since, LoginAttempt.email == email, LoginAttempt.ip == ip)
    spray = _failures(session, since, LoginAttempt.ip == ip)
    wait = max(_wait(pair[0], settings.login_attempts_per_account, pair[1], settings, now),
               _wait(spray[0], settings.login_attempts_per_ip, spray[1], settings, now))
    if wait > 0:
        raise SignInThrottled(math.ceil(wait))


def sign_in(
    session: Session, settings: Settings, *, email: str, password: str, ip: str, user_agent: str, now: datetime
) -> tuple[Principal, str]:
    """Check the credentials and open a session; returns the principal and the cookie token.

    Failures are recorded (for throttling) and audited, and answer the same way whether
    the account exists or not.
    """
    email = normalise_email(email)[:320]
    check_throttle(session, settings, email=email, ip=ip, now=now)
    user = session.scalar(sa.select(User).where(User.email == email))
    valid = verify_password(user.password_hash if user else None, password)
    if user is None or not valid or not user.active:
        session.add(LoginAttempt(at=now, email=email, ip=ip, succeeded=False))
        record_event(
            session, actor=email, action=Action.SIGN_IN_FAILED, subject=f"user:{user.id}" if user else "user:unknown",
            details={"ip": ip, "reason": "inactive" if user is not None and valid else "bad_credentials"},
        )
        raise SignInError("That email and password do not match an active account.")
    if user.password_hash and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    session.add(LoginAttempt(at=now, email=email, ip=ip, succeeded=True))
    token = open_session(session, user, ip=ip, user_agent=user_agent, now=now)
    record_event(session, actor=user.email, actor_id=user.id, action=Action.SIGNED_IN,
                 subject=f"user:{user.id}", details={"ip": ip})
    return principal_of(user), token


def open_session(session: Session, user: User, *, ip: str, user_agent: str, now: datetime) -> str:
    """A fresh session id on every sign-in: nothing an attacker planted before survives it."""
    token = secrets.token_urlsafe(32)
    session.add(UserSession(
        token_hash=digest(token), user_id=user.id, created_at=now, last_seen_at=now,  # type: ignore[arg-type]
        ip=ip[:64], user_agent=user_agent[:300],
    ))
    return token


def sign_out(session: Session, token: str, principal: Principal | None) -> None:
    session.execute(sa.delete(UserSession).where(UserSession.token_hash == digest(token)))
    if principal is not None:
        record_event(session, actor=principal.email, actor_id=principal.id, action=Action.SIGNED_OUT,
                     subject=f"user:{principal.id}")


def end_all_sessions(session: Session, user_id: int) -> None:
    session.execute(sa.delete(UserSession).where(UserSession.user_id == user_id))


def principal_for_session(session: Session, settings: Settings, token: str, *, now: datetime) -> Principal | None:
    """The user behind a session cookie, or None when it is unknown, idle too long, too
    old, or its user was deactivated (the session is then deleted)."""
    row = session.execute(
        sa.select(UserSession, User).join(User, User.id == UserSession.user_id)
        .where(UserSession.token_hash == digest(token))
    ).first()
    if row is None:
        return None
    user_session, user = row
    idle = now - user_session.last_seen_at > timedelta(minutes=settings.session_idle_minutes)
    aged = now - user_session.created_at > timedelta(hours=settings.session_absolute_hours)
    if idle or aged or not user.active:
        session.delete(user_session)
        return None
    if now - user_session.last_seen_at > TOUCH_EVERY:
        user_session.last_seen_at = now
    return principal_of(user)
