"""People: creating them, changing their role, (de)activating them, finding them. The CLI,
the demo seed and the admin pages share these rules."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.emails import EMAIL_PATTERN, normalise_email
from webapp.core.models import Role, User, utcnow
from webapp.core.passwords import MIN_PASSWORD_LENGTH, hash_password
from webapp.services.audit import Action, record_event
from webapp.services.identity import end_all_sessions, revoke_all_tokens


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
) -> User:
    email = normalise_email(email)
    if not EMAIL_PATTERN.match(email):
        raise AccountError(f"{email!r} is not an email address")
    if not name.strip():
        raise AccountError("a name is required")
    if role not in Role.__members__:
        raise AccountError(f"role must be one of {', '.join(Role)}")
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
    )
    session.add(user)
    session.flush()
    record_event(
        session,
        actor=actor,
        action=Action.USER_CREATED,
        subject=f"user:{user.id}",
        details={"email": email, "role": role},
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


def change_role(session: Session, user: User, role: str, *, actor: str, actor_id: int | None) -> None:
    if role not in Role.__members__:
        raise AccountError(f"role must be one of {', '.join(Role)}")
    if role == user.role:
        return
    if role != Role.admin and _last_active_admin(session, user):
        raise AccountError("This is the last active admin; make someone else an admin first.")
    previous, user.role = user.role, role
    record_event(session, actor=actor, actor_id=actor_id, action=Action.USER_ROLE_CHANGED,
                 subject=f"user:{user.id}", details={"from": previous, "to": role})


def set_active(session: Session, user: User, active: bool, *, actor: str, actor_id: int | None) -> None:
    """Deactivating ends every session of the user at once and revokes their API tokens, so
    reactivating them later brings none of those back."""
    if active == user.active:
        return
    if not active and _last_active_admin(session, user):
        raise AccountError("This is the last active admin; it cannot be deactivated.")
    user.active = active
    if not active:
        end_all_sessions(session, user.id)  # type: ignore[arg-type]
        revoke_all_tokens(session, user.id, actor=actor, actor_id=actor_id, now=utcnow())  # type: ignore[arg-type]
    record_event(session, actor=actor, actor_id=actor_id,
                 action=Action.USER_ACTIVATED if active else Action.USER_DEACTIVATED, subject=f"user:{user.id}")


def search_users(session: Session, *, text: str = "", limit: int = 50, offset: int = 0) -> tuple[list[User], int]:
    query = sa.select(User)
    if text:
        pattern = f"%{text.lower()}%"
        query = query.where(sa.or_(sa.func.lower(User.name).like(pattern), User.email.like(pattern),  # type: ignore[attr-defined]
                                   sa.func.lower(User.department).like(pattern)))
    total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    users = session.scalars(query.order_by(User.name, User.id).limit(limit).offset(offset)).all()
    return list(users), total
