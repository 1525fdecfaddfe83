"""Resources people can request, and who approves them."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import Resource, ResourceApprover, Role, User
from webapp.services.audit import Action, record_event


class CatalogError(ValueError):
    """The resource cannot be saved as asked; the message says why."""


@dataclass(frozen=True)
class ResourceChanges:
    name: str
    kind: str
    description: str
    approvals_required: int
    max_duration_seconds: int | None
    pending_ttl_seconds: int
    auto_approve: bool
    approver_ids: list[int]


def approvers_of(session: Session, resource_id: int) -> list[User]:
    return list(session.scalars(
        sa.select(User).join(ResourceApprover, ResourceApprover.user_id == User.id)
        .where(ResourceApprover.resource_id == resource_id).order_by(User.name)
    ).all())


def list_resources(session: Session) -> list[tuple[Resource, list[User]]]:
    resources = session.scalars(sa.select(Resource).order_by(Resource.name)).all()
    rows = session.execute(
        sa.select(ResourceApprover.resource_id, User).join(User, User.id == ResourceApprover.user_id).order_by(User.name)
    ).all()
    by_resource: dict[int, list[User]] = {}
    for resource_id, user in rows:
        by_resource.setdefault(resource_id, []).append(user)
    return [(r, by_resource.get(r.id, [])) for r in resources]  # type: ignore[arg-type]


def possible_approvers(session: Session) -> list[User]:
    return list(session.scalars(
        sa.select(User).where(User.active, User.role.in_([Role.approver, Role.admin]),  # type: ignore[attr-defined]
                              User.is_service.is_(False))  # type: ignore[attr-defined]
        .order_by(User.name)
    ).all())


def _validate(session: Session, changes: ResourceChanges, resource_id: int | None) -> None:
    clash = session.scalar(sa.select(Resource.id).where(Resource.name == changes.name))
    if clash is not None and clash != resource_id:
        raise CatalogError(f"A resource named {changes.name} already exists.")
    eligible = {u.id for u in possible_approvers(session)}
    if not set(changes.approver_ids) <= eligible:
        raise CatalogError("Approvers must be active people (not service accounts) with the approver or admin role.")
    if not changes.auto_approve and len(set(changes.approver_ids)) < changes.approvals_required:
        raise CatalogError(
            f"{changes.approvals_required} approvals are required but only "
            f"{len(set(changes.approver_ids))} approvers are chosen."
        )


def save_resource(session: Session, changes: ResourceChanges, *, resource: Resource | None,
                  actor: str, actor_id: int | None) -> Resource:
    """Create (resource=None) or update a resource and replace its approvers, audited."""
    _validate(session, changes, resource.id if resource else None)
    created = resource is None
    if resource is None:
        resource = Resource(name=changes.name, owner_id=actor_id)
        session.add(resource)
    resource.name = changes.name
    resource.kind = changes.kind
    resource.description = changes.description
    resource.approvals_required = changes.approvals_required
    resource.max_duration_seconds = changes.max_duration_seconds
    resource.pending_ttl_seconds = changes.pending_ttl_seconds
    resource.auto_approve = changes.auto_approve
    session.flush()
    session.execute(sa.delete(ResourceApprover).where(ResourceApprover.resource_id == resource.id))
    for user_id in sorted(set(changes.approver_ids)):
        session.add(ResourceApprover(resource_id=resource.id, user_id=user_id))  # type: ignore[arg-type]
    record_event(session, actor=actor, actor_id=actor_id,
                 action=Action.RESOURCE_CREATED if created else Action.RESOURCE_UPDATED, subject=f"resource:{resource.id}",
                 details={"name": changes.name, "approvers": sorted(set(changes.approver_ids)),
                          "approvals_required": changes.approvals_required, "auto_approve": changes.auto_approve})
    return resource
