"""People: creating them, changing their role, (de)activating them, finding them. The CLI,
the demo seed and the admin pages share these rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.emails import EMAIL_PATTERN, normalise_email
from webapp.core.models import Resource, ResourceApprover, Role, User, utcnow
from webapp.core.passwords import MIN_PASSWORD_LENGTH, hash_password
from webapp.services.audit import Action, record_event
from webapp.services.identity import end_all_sessions
from webapp.services.tokens import revoke_all_tokens


class AccountError(ValueError):
    """The account cannot be created as asked; the message says why."""


def create_user(
    session: Session,
    *,
    email: str,
    name: str,
    password: str | None,
    role: str = Role.member,
    department: str = "",
    title: str = "",
    actor: str = "system",
    service: bool = False,
) -> User:
    """A new person, or with `service` an account for scripts: it signs in only with the
    tokens an admin issues for it, and never decides requests."""
    email = normalise_email(email)
    if not EMAIL_PATTERN.match(email):
        raise AccountError(f"{email!r} is not an email address")
    if not name.strip():
        raise AccountError("a name is required")
    if role not in Role.__members__:
        raise AccountError(f"role must be one of {', '.join(Role)}")
    if service and password:
        raise AccountError("a service account has no password: it uses the API tokens an admin issues for it")
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    if session.scalar(sa.select(User.id).where(User.email == email)) is not None:
        raise AccountError(f"a user with email {email} already exists")
    user = User(
        email=email,
        name=name.strip(),
        role=role,
        department=department.strip(),
        title=title.strip(),
        password_hash=hash_password(password) if password else None,
        is_service=service,
    )
    session.add(user)
    session.flush()
    record_event(
        session,
        actor=actor,
        action=Action.USER_CREATED,
        subject=f"user:{user.id}",
        details={"email": email, "role": role, **({"service": True} if service else {})},
    )
    return user


def _last_active_admin(session: Session, user: User) -> bool:
    if user.role != Role.admin or not user.active:
        return False
    others = session.scalar(
        sa.select(sa.func.count()).select_from(User)
        .where(User.role == Role.admin, User.active, User.id != user.id)
    )
    return not others


@dataclass(frozen=True)
class ShortOfApprovers:
    """A resource that has fewer active approvers than the approvals it requires."""

    resource_id: int
    name: str
    approvers: int
    required: int


DECIDING_ROLES = (Role.approver, Role.admin)


def short_of_approvers(session: Session, resource_ids: list[int]) -> list[ShortOfApprovers]:
    """Those of these resources (auto-approved ones aside) whose active approvers, with a role
    that decides, are fewer than the approvals they require."""
    if not resource_ids:
        return []
    deciding = sa.func.count(User.id).filter(User.active, User.role.in_(DECIDING_ROLES))  # type: ignore[attr-defined]
    rows = session.execute(
        sa.select(Resource.id, Resource.name, deciding, Resource.approvals_required)
        .outerjoin(ResourceApprover, ResourceApprover.resource_id == Resource.id)
        .outerjoin(User, User.id == ResourceApprover.user_id)
        .where(Resource.id.in_(resource_ids), Resource.auto_approve.is_(False))  # type: ignore[union-attr, attr-defined]
        .group_by(Resource.id, Resource.name, Resource.approvals_required)
        .order_by(Resource.name)
    ).all()
    return [ShortOfApprovers(*row) for row in rows if row[2] < row[3]]


def _stop_approving(session: Session, user: User) -> tuple[list[str], list[ShortOfApprovers]]:
    """Remove the person from every resource they approve: someone who can no longer decide
    must not keep seeing those requests nor count toward their approvers. Returns the
    resources they approved and those now short of approvers."""
    approved = session.execute(
        sa.select(Resource.id, Resource.name).join(ResourceApprover, ResourceApprover.resource_id == Resource.id)
        .where(ResourceApprover.user_id == user.id).order_by(Resource.name)).all()
    if not approved:
        return [], []
    session.execute(sa.delete(ResourceApprover).where(ResourceApprover.user_id == user.id))
    session.flush()
    return [name for _, name in approved], short_of_approvers(session, [resource_id for resource_id, _ in approved])


def _short_details(short: list[ShortOfApprovers]) -> list[dict[str, Any]]:
    return [{"resource": s.name, "approvers": s.approvers, "required": s.required} for s in short]


def change_role(session: Session, user: User, role: str, *, actor: str,
                actor_id: int | None) -> list[ShortOfApprovers]:
    """A new role; a person who no longer approves or administers leaves every resource they
    approved. Returns the resources that are now short of approvers."""
    if role not in Role.__members__:
        raise AccountError(f"role must be one of {', '.join(Role)}")
    if role == user.role:
        return []
    if role != Role.admin and _last_active_admin(session, user):
        raise AccountError("This is the last active admin; make someone else an admin first.")
    previous, user.role = user.role, role
    left, short = _stop_approving(session, user) if role not in DECIDING_ROLES else ([], [])
    details: dict[str, Any] = {"from": previous, "to": role}
    if left:
        details.update(no_longer_approves=left, short_of_approvers=_short_details(short))
    record_event(session, actor=actor, actor_id=actor_id, action=Action.USER_ROLE_CHANGED,
                 subject=f"user:{user.id}", details=details)
    return short


def set_active(session: Session, user: User, active: bool, *, actor: str,
               actor_id: int | None) -> list[ShortOfApprovers]:
    """Deactivating ends every session of the user at once, revokes their API tokens (so
    reactivating them later brings none of those back) and takes them off every resource
    they approve. Returns the resources that are now short of approvers."""
    if active == user.active:
        return []
    if not active and _last_active_admin(session, user):
        raise AccountError("This is the last active admin; it cannot be deactivated.")
    user.active = active
    details: dict[str, Any] = {}
    short: list[ShortOfApprovers] = []
    if not active:
        end_all_sessions(session, user.id)  # type: ignore[arg-type]
        revoke_all_tokens(session, user.id, actor=actor, actor_id=actor_id, now=utcnow())  # type: ignore[arg-type]
        left, short = _stop_approving(session, user)
        if left:
            details = {"no_longer_approves": left, "short_of_approvers": _short_details(short)}
    record_event(session, actor=actor, actor_id=actor_id, action=Action.USER_ACTIVATED if active else
                 Action.USER_DEACTIVATED, subject=f"user:{user.id}", details=details)
    return short


def search_users(session: Session, *, text: str = "", limit: int = 50, offset: int = 0) -> tuple[list[User], int]:
    query = sa.select(User)
    if text:
        pattern = f"%{text.lower()}%"
        query = query.where(sa.or_(sa.func.lower(User.name).like(pattern), User.email.like(pattern),  # type: ignore[attr-defined]
                                   sa.func.lower(User.department).like(pattern)))
    total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    users = session.scalars(query.order_by(User.name, User.id).limit(limit).offset(offset)).all()
    return list(users), total
