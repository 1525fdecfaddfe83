"""Drift: does each target still match the grants? Plain functions over the caller's session;
webapp/workflows/drift.py reads the targets and runs these as transactions.

For every resource of an agent, the expected members are the holders of its active grants,
named as the target names them; grants that are being provisioned or ending are in flux and
left out on both sides. A member with no grant is `extra` (access given outside Gatehouse);
a grant with no membership is `missing`. Each check replaces the resource's findings.
"""

from __future__ import annotations

from typing import TypedDict

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import Agent, DriftFinding, DriftPolicy, Grant, GrantState, Resource, User, utcnow
from webapp.services.audit import Action, record_event

KINDS_WITH_MEMBERS = ("postgres", "ldap", "scim")  # a webhook cannot list members; manual has no system


class Holder(TypedDict):
    user_id: int
    email: str
    name: str


class ResourcePlan(TypedDict):
    resource_id: int
    name: str
    target: str
    policy: str
    holders: list[Holder]  # active grants
    in_flux: list[Holder]  # holders whose grant is being provisioned or ending: neither extra nor missing


class DriftPlan(TypedDict):
    agent_id: int
    agent: str
    kind: str
    settings: dict[str, object]
    resources: list[ResourcePlan]


class Finding(TypedDict):
    kind: str  # extra / missing
    member: str
    user_id: int | None


def plan(session: Session, agent_id: int) -> DriftPlan | None:
    """What a check of this agent compares, or None when its kind cannot list members."""
    agent = session.get(Agent, agent_id)
    if agent is None or agent.kind not in KINDS_WITH_MEMBERS:
        return None
    resources = [resource_plan(session, resource) for resource in session.scalars(
        sa.select(Resource).where(Resource.agent_id == agent_id, Resource.target != "").order_by(Resource.id))]
    return DriftPlan(agent_id=agent.id, agent=agent.name, kind=agent.kind, settings=dict(agent.settings or {}),  # type: ignore[typeddict-item]
                     resources=resources)


def resource_plan(session: Session, resource: Resource) -> ResourcePlan:
    """The resource's holders (active grants) and the people whose grant is on its way in or out."""
    rows = session.execute(
        sa.select(Grant.state, User.id, User.email, User.name).join(User, User.id == Grant.user_id)
        .where(Grant.resource_id == resource.id, Grant.revoked_at.is_(None)  # type: ignore[union-attr]
               | Grant.state.in_([GrantState.ending]))).all()  # type: ignore[attr-defined]
    holders = [Holder(user_id=r.id, email=r.email, name=r.name) for r in rows if r.state == GrantState.active]
    in_flux = [Holder(user_id=r.id, email=r.email, name=r.name) for r in rows if r.state != GrantState.active]
    return ResourcePlan(resource_id=resource.id, name=resource.name, target=resource.target,  # type: ignore[typeddict-item]
                        policy=resource.drift_policy, holders=holders, in_flux=in_flux)


def replan(session: Session, before: ResourcePlan) -> ResourcePlan:
    """The plan of `before`'s resource read again after its target was: only people whose
    grant stood still across the read are holders; anyone whose grant changed meanwhile (made,
    activated, ended) counts as in flux, neither extra nor missing, so a check never undoes a
    change it raced with."""
    resource = session.get(Resource, before["resource_id"])
    after = resource_plan(session, resource) if resource is not None else {**before, "holders": [], "in_flux": []}
    steady = {h["user_id"] for h in before["holders"]} & {h["user_id"] for h in after["holders"]}
    everyone = {h["user_id"]: h for h in [*before["holders"], *before["in_flux"], *after["holders"], *after["in_flux"]]}
    return ResourcePlan(**{**before, "holders": [h for i, h in everyone.items() if i in steady],  # type: ignore[typeddict-item]
                           "in_flux": [h for i, h in everyone.items() if i not in steady]})


def compare(holders: list[Holder], names: dict[str, str], members: set[str], in_flux: set[str]) -> list[Finding]:
    """The findings: `names` maps a holder's email to their member name in the target (a
    holder without one has no account there, which is a missing membership too)."""
    expected = {names[h["email"]]: h for h in holders if h["email"] in names}
    findings = [Finding(kind="extra", member=member, user_id=None)
                for member in sorted(members - set(expected) - in_flux)]
    findings += [Finding(kind="missing", member=name, user_id=h["user_id"])
                 for name, h in sorted(expected.items()) if name not in members]
    findings += [Finding(kind="missing", member=h["email"], user_id=h["user_id"])
                 for h in holders if h["email"] not in names]
    return findings


def record(session: Session, agent_id: int, resource_id: int, findings: list[Finding], corrected: list[Finding],
           *, check: str) -> None:
    """Replace the resource's findings with this check's; audit what was found and corrected."""
    session.execute(sa.delete(DriftFinding).where(DriftFinding.resource_id == resource_id))
    fixed = {(f["kind"], f["member"]) for f in corrected}
    now = utcnow()
    for finding in findings:
        session.add(DriftFinding(agent_id=agent_id, resource_id=resource_id, kind=finding["kind"],
                                 member=finding["member"][:500], user_id=finding["user_id"], found_at=now,
                                 corrected=(finding["kind"], finding["member"]) in fixed))
    if findings:
        record_event(session, actor="drift", action=Action.DRIFT_FOUND, subject=f"resource:{resource_id}",
                     details={"check": check, "extra": [f["member"] for f in findings if f["kind"] == "extra"],
                              "missing": [f["member"] for f in findings if f["kind"] == "missing"]})
    if corrected:
        record_event(session, actor="drift", action=Action.DRIFT_CORRECTED, subject=f"resource:{resource_id}",
                     details={"check": check, "removed": [f["member"] for f in corrected if f["kind"] == "extra"],
                              "added": [f["member"] for f in corrected if f["kind"] == "missing"]})


def finish(session: Session, agent_id: int, *, errors: list[str]) -> int:
    """The agent's last check: when, how much drift is left uncorrected, and its health."""
    agent = session.get(Agent, agent_id, with_for_update=True)
    assert agent is not None
    found = session.scalar(sa.select(sa.func.count()).select_from(DriftFinding).where(
        DriftFinding.agent_id == agent_id, ~DriftFinding.corrected)) or 0
    now = utcnow()
    agent.drift_checked_at, agent.drift_found, agent.checked_at = now, found, now
    agent.healthy = not errors
    agent.last_error = "; ".join(errors)[:2000] if errors else None
    return found


def findings_of(session: Session, *, agent_id: int | None = None, resource_id: int | None = None,
                limit: int = 200) -> list[tuple[DriftFinding, str, str | None]]:
    """Findings with their resource's name and, for a missing one, the person's name."""
    query = (sa.select(DriftFinding, Resource.name, User.name).join(Resource, Resource.id == DriftFinding.resource_id)
             .outerjoin(User, User.id == DriftFinding.user_id))
    if agent_id is not None:
        query = query.where(DriftFinding.agent_id == agent_id)
    if resource_id is not None:
        query = query.where(DriftFinding.resource_id == resource_id)
    return [(f, r, u) for f, r, u in session.execute(
        query.order_by(DriftFinding.corrected, Resource.name, DriftFinding.kind, DriftFinding.member).limit(limit))]


def uncorrected_total(session: Session) -> int:
    """Drift still standing across every agent: the admins' dashboard counter."""
    return session.scalar(sa.select(sa.func.count()).select_from(DriftFinding).where(~DriftFinding.corrected)) or 0


def correcting(policy: str) -> bool:
    return policy == DriftPolicy.correct
