"""Resources people can request, and who approves them."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import Agent, DriftPolicy, Resource, ResourceApprover, Role, User
from webapp.services.audit import Action, record_event

MANUAL_AGENT = "manual"  # a person does the work: no target system to name
TARGET_MAX = 500


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
    # Where a grant takes effect: None keeps grants inside Gatehouse (active at once).
    agent_id: int | None = None
    target: str = ""  # the role, group DN or SCIM group id in the agent's system
    drift_policy: str = DriftPolicy.report


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


def agent_choices(session: Session) -> list[Agent]:
    """Every agent a resource may use, by name."""
    return list(session.scalars(sa.select(Agent).order_by(Agent.name)).all())


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
    _validate_agent(session, changes)


def _validate_agent(session: Session, changes: ResourceChanges) -> None:
    """An agent that exists, and a target wherever a system (not a person) does the work."""
    if changes.drift_policy not in set(DriftPolicy):
        raise CatalogError(f"Drift must be one of: {', '.join(DriftPolicy)}.")
    if len(changes.target) > TARGET_MAX:
        raise CatalogError(f"The target is too long: at most {TARGET_MAX} characters.")
    if changes.agent_id is None:
        return
    agent = session.get(Agent, changes.agent_id)
    if agent is None:
        raise CatalogError("Choose an agent from the list.")
    if agent.kind != MANUAL_AGENT and not changes.target.strip():
        raise CatalogError(f"Name the target in {agent.name}: the role, group DN or SCIM group id to manage.")


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
    resource.agent_id = changes.agent_id
    resource.target = changes.target.strip()
    resource.drift_policy = changes.drift_policy
    session.flush()
    session.execute(sa.delete(ResourceApprover).where(ResourceApprover.resource_id == resource.id))
    for user_id in sorted(set(changes.approver_ids)):
        session.add(ResourceApprover(resource_id=resource.id, user_id=user_id))  # type: ignore[arg-type]
    record_event(session, actor=actor, actor_id=actor_id,
                 action=Action.RESOURCE_CREATED if created else Action.RESOURCE_UPDATED, subject=f"resource:{resource.id}",
                 details={"name": changes.name, "approvers": sorted(set(changes.approver_ids)),
                          "approvals_required": changes.approvals_required, "auto_approve": changes.auto_approve,
                          "agent_id": changes.agent_id, "target": changes.target.strip(),
                          "drift_policy": str(changes.drift_policy)})
    return resource
