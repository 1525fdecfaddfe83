"""Sign-in through the company's OpenID Connect provider: what Gatehouse keeps between
leaving for the provider and coming back, checking the ID token, and the person it names.

    begin_login      a row per sign-in under way: state (single use), nonce, PKCE verifier
    take_login       the callback deletes the row it uses: a replayed state finds nothing
    verified_claims  the ID token's signature (the provider's JWKS), issuer, audience,
                     expiry and nonce, checked with joserfc (never by hand)
    sign_in_person   creates or updates the person from the claims, their role from the
                     groups claim, and opens a session; refuses deactivated and service accounts

The HTTP half (discovery, the token exchange, fetching keys) is webapp.services.oidc_client.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from sqlalchemy.orm import Session

from webapp.config import Settings
from webapp.core.emails import normalise_email
from webapp.core.errors import Refusal
from webapp.core.models import OidcLogin, Role, User
from webapp.services import accounts
from webapp.services.audit import Action, record_event
from webapp.services.identity import open_session

LOGIN_SECONDS = 600  # how long a sign-in may stay at the provider
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]  # never "none" or HMAC
RANK = {Role.member: 0, Role.approver: 1, Role.admin: 2}


class OidcRefused(Refusal):
    """The provider's answer does not sign this person in; the message says why, for them."""

    status_code = 400


@dataclass(frozen=True)
class PendingLogin:
    state: str
    nonce: str
    code_verifier: str
    next_url: str


def begin_login(session: Session, next_url: str, *, now: datetime) -> PendingLogin:
    """A fresh state, nonce and PKCE verifier for one trip to the provider; old trips are swept."""
    session.execute(sa.delete(OidcLogin).where(OidcLogin.created_at < now - timedelta(seconds=LOGIN_SECONDS)))
    login = PendingLogin(secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(64), next_url)
    session.add(OidcLogin(state=login.state, nonce=login.nonce, code_verifier=login.code_verifier,
                          next_url=next_url, created_at=now))
    return login


def take_login(session: Session, state: str, *, now: datetime) -> PendingLogin:
    """The sign-in `state` belongs to, removed so that it works once; OidcRefused if it was
    used already, is too old, or was never ours."""
    row = session.get(OidcLogin, state[:64]) if state else None
    if row is None or row.created_at < now - timedelta(seconds=LOGIN_SECONDS):
        if row is not None:
            session.delete(row)
        raise OidcRefused("This sign-in has been used already or took too long. Sign in again.")
    session.delete(row)
    return PendingLogin(row.state, row.nonce, row.code_verifier, row.next_url)


def verified_claims(id_token: str, keys: KeySet, *, issuer: str, client_id: str, nonce: str, now: datetime,
                    leeway: int) -> dict[str, Any]:
    """The ID token's claims once its signature, issuer, audience, expiry and nonce check out."""
    try:
        token = jwt.decode(id_token, keys, algorithms=ALGORITHMS)
        claims: dict[str, Any] = dict(token.claims)
        jwt.JWTClaimsRegistry(
            now=int(now.timestamp()), leeway=leeway,
            iss={"essential": True, "value": issuer}, aud={"essential": True, "value": client_id},
            exp={"essential": True}, sub={"essential": True}, nonce={"essential": True, "value": nonce},
        ).validate(claims)
    except (JoseError, ValueError) as error:
        raise OidcRefused(f"The identity provider's answer did not check out ({type(error).__name__}). "
                          "Sign in again; if it keeps happening, tell an admin.") from error
    audience = claims.get("aud")
    if isinstance(audience, list) and len(audience) > 1 and claims.get("azp") != client_id:
        raise OidcRefused("The identity provider's answer was meant for another application (azp).")
    return claims


def role_for(groups: Any, mapping: dict[str, str]) -> str:
    """The highest role any of `groups` maps to; member when none does."""
    names = [groups] if isinstance(groups, str) else list(groups) if isinstance(groups, list) else []
    roles = [Role(mapping[name]) for name in names if isinstance(name, str) and name in mapping]
    return max(roles, key=RANK.__getitem__, default=Role.member).value


def _text(claims: dict[str, Any], name: str, limit: int) -> str:
    value = claims.get(name)
    return value.strip()[:limit] if isinstance(value, str) else ""


def sign_in_person(session: Session, settings: Settings, claims: dict[str, Any], *, ip: str, user_agent: str,
                   now: datetime) -> tuple[User, str]:
    """The person the claims name, created or brought up to date, with a new session token.
    Found by the provider's subject, else (first sign-in) by email."""
    subject = f"{settings.oidc_issuer} {claims['sub']}"[:400]
    email = normalise_email(_text(claims, settings.oidc_email_claim, 320))
    if not email or claims.get("email_verified") is False:
        raise OidcRefused("Your identity provider did not give a verified email address, which Gatehouse needs.")
    name = _text(claims, settings.oidc_name_claim, 200) or email.split("@")[0]
    profile = {"department": _text(claims, settings.oidc_department_claim, 100),
               "title": _text(claims, settings.oidc_title_claim, 100)}
    mapping = settings.oidc_roles()  # empty: roles are set on /admin/users, and sign-in leaves them be
    role = role_for(claims.get(settings.oidc_groups_claim), mapping)
    user = session.scalar(sa.select(User).where(User.oidc_subject == subject))
    if user is None:
        user = session.scalar(sa.select(User).where(User.email == email, User.oidc_subject.is_(None)))  # type: ignore[union-attr]
    if user is None:
        try:
            user = accounts.create_user(session, email=email, name=name, password=None, role=role,
                                        actor="oidc", **profile)
        except accounts.AccountError as error:
            raise OidcRefused(f"Gatehouse cannot make an account for you: {error}.") from error
    if user.is_service or not user.active:
        record_event(session, actor=email, action=Action.SIGN_IN_FAILED, subject=f"user:{user.id}",
                     details={"ip": ip, "reason": "service" if user.is_service else "inactive", "via": "oidc"})
        raise OidcRefused("This account cannot sign in. Ask an admin if you think it should.")
    changed = {key: value for key, value in {"email": email, "name": name, **profile}.items()
               if getattr(user, key) != value and not (key == "email" and _email_taken(session, email, user))}
    for key, value in changed.items():
        setattr(user, key, value)
    user.oidc_subject = subject
    if changed:
        record_event(session, actor="oidc", action=Action.USER_UPDATED, subject=f"user:{user.id}",
                     details={"changed": sorted(changed)})
    if mapping and user.role != role:
        try:
            accounts.change_role(session, user, role, actor="oidc", actor_id=None)
        except accounts.AccountError as error:  # the last admin keeps their role until there is another
            record_event(session, actor="oidc", action=Action.USER_UPDATED, subject=f"user:{user.id}",
                         details={"role_kept": user.role, "groups_say": role, "why": str(error)})
    token = open_session(session, user, ip=ip, user_agent=user_agent, now=now)
    record_event(session, actor=user.email, actor_id=user.id, action=Action.SIGNED_IN, subject=f"user:{user.id}",
                 details={"ip": ip, "via": "oidc"})
    return user, token


def _email_taken(session: Session, email: str, user: User) -> bool:
    return session.scalar(sa.select(User.id).where(User.email == email, User.id != user.id)) is not None
