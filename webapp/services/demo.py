"""A demo organisation: people across departments, resources with approvers, and a
history of requests and grants, so a fresh `make run` has something to look at.

Deterministic: the same data every time (apart from times, which are relative to now).
History is written as finished records with their audit trail; nothing is left pending,
because pending requests belong to live workflows: seed-demo starts those afterwards
(webapp.workflows.demo).
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from webapp.core.models import (
    AccessRequest,
    Agent,
    Approval,
    Decision,
    Grant,
    GrantState,
    Notification,
    NotificationStatus,
    RequestStatus,
    Resource,
    ResourceApprover,
    ResourceKind,
    Role,
    User,
    utcnow,
)
from webapp.core.passwords import hash_password
from webapp.services.audit import Action, acting_person, record_event
from webapp.services.demo_receiver import DEMO_SECRET_ENV
from webapp.services.demo_receiver import PATH as DEMO_RECEIVER_PATH

DEMO_PASSWORD = "gatehouse-demo"
DEMO_DOMAIN = "example.com"
HOUR = 3600
DAY = 24 * HOUR

# (name, department, title, role)
PEOPLE: list[tuple[str, str, str, str]] = [
    ("Ada Okafor", "Security", "Security Lead", Role.admin),
    ("Björn Lindqvist", "Platform", "Platform Lead", Role.admin),
    ("Chiara Rossi", "Engineering", "Engineering Manager", Role.approver),
    ("Dmitri Volkov", "Platform", "Site Reliability Engineer", Role.approver),
    ("Elif Yılmaz", "Data", "Data Platform Lead", Role.approver),
    ("Fatima Al-Sayed", "Finance", "Finance Director", Role.approver),
    ("Gabriel Souza", "Sales", "Sales Operations Manager", Role.approver),
    ("Hana Tanaka", "Support", "Support Manager", Role.approver),
    ("Ines Moreau", "People", "People Partner", Role.approver),
    ("Jamal Carter", "Engineering", "Software Engineer", Role.member),
    ("Kaja Nowak", "Engineering", "Software Engineer", Role.member),
    ("Liam O'Brien", "Engineering", "Senior Software Engineer", Role.member),
    ("Mei Chen", "Engineering", "Software Engineer", Role.member),
    ("Nikhil Rao", "Engineering", "Senior Software Engineer", Role.member),
    ("Olga Petrova", "Platform", "Site Reliability Engineer", Role.member),
    ("Pedro Alves", "Platform", "Site Reliability Engineer", Role.member),
    ("Qiu Ling", "Data", "Data Engineer", Role.member),
    ("Rania Haddad", "Data", "Data Analyst", Role.member),
    ("Søren Jensen", "Data", "Data Analyst", Role.member),
    ("Tomás Ortega", "Finance", "Accountant", Role.member),
    ("Uma Iyer", "Finance", "Financial Analyst", Role.member),
    ("Viktor Horváth", "Sales", "Account Executive", Role.member),
    ("Wanjiru Kamau", "Sales", "Account Executive", Role.member),
    ("Xavier Dubois", "Sales", "Sales Engineer", Role.member),
    ("Yara Nasser", "Support", "Support Engineer", Role.member),
    ("Zoë Müller", "Support", "Support Engineer", Role.member),
    ("Aarav Shah", "Support", "Support Engineer", Role.member),
    ("Beatriz Gómez", "People", "Recruiter", Role.member),
    ("Cem Aydın", "Security", "Security Engineer", Role.member),
    ("Dana Levi", "Engineering", "Software Engineer", Role.member),
]

# (name, kind, description, approver names, approvals required, max duration s, auto-approve)
RESOURCES: list[tuple[str, str, str, list[str], int, int | None, bool]] = [
    ("aws-production", ResourceKind.app, "AWS console and API access to the production account.",
     ["Dmitri Volkov", "Björn Lindqvist", "Ada Okafor"], 2, 8 * HOUR, False),
    ("aws-staging", ResourceKind.app, "AWS access to the staging account.",
     ["Dmitri Volkov", "Chiara Rossi"], 1, 30 * DAY, False),
    ("github-admins", ResourceKind.group, "Owners of the GitHub organisation.",
     ["Björn Lindqvist", "Ada Okafor"], 2, 1 * DAY, False),
    ("github-engineering", ResourceKind.group, "Write access to engineering repositories.",
     ["Chiara Rossi"], 1, None, False),
    ("analytics-warehouse", ResourceKind.database, "Read access to the analytics warehouse.",
     ["Elif Yılmaz"], 1, 30 * DAY, False),
    ("orders-db-readonly", ResourceKind.database, "Read-only replica of the orders database.",
     ["Elif Yılmaz", "Dmitri Volkov"], 1, 7 * DAY, False),
    ("payroll", ResourceKind.app, "The payroll system: salaries and bank details.",
     ["Fatima Al-Sayed", "Ines Moreau"], 2, 7 * DAY, False),
    ("netsuite", ResourceKind.app, "Finance ledger and invoicing.",
     ["Fatima Al-Sayed"], 1, None, False),
    ("salesforce", ResourceKind.app, "CRM: accounts, opportunities and contacts.",
     ["Gabriel Souza"], 1, None, False),
    ("zendesk-admin", ResourceKind.app, "Administration of the support desk.",
     ["Hana Tanaka"], 1, 30 * DAY, False),
    ("pagerduty-oncall", ResourceKind.group, "The production on-call rotation.",
     ["Dmitri Volkov", "Chiara Rossi"], 1, 30 * DAY, False),
    ("vpn", ResourceKind.app, "Corporate VPN for remote work.",
     ["Ada Okafor"], 1, None, True),
]


# Access most of a department holds, permanently or renewed lately: everyone in the department
# but its last-listed person, so that person's request form suggests it ("people like you
# have access to", webapp/services/suggestions.py).
TEAM_ACCESS: list[tuple[str, str]] = [
    ("Engineering", "github-engineering"),
    ("Platform", "pagerduty-oncall"),
    ("Data", "analytics-warehouse"),
    ("Finance", "netsuite"),
    ("Sales", "salesforce"),
    ("Support", "zendesk-admin"),
]


@dataclass(frozen=True)
class DemoLogin:
    email: str
    name: str
    role: str


class _History:
    """The seed's audit rows, written at the end in the order they happened: the audit log reads
    by id, so history written request by request would otherwise jump back and forth in time."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, **row: Any) -> None:
        self.rows.append(row)

    def write(self, session: Session) -> None:
        for row in sorted(self.rows, key=lambda r: r["at"]):
            with acting_person(None, row.get("actor_id")):  # people used the pages
                record_event(session, **row)
        self.rows.clear()


def email_for(name: str) -> str:
    """"Søren Jensen" -> soren.jensen@example.com: ASCII, first name dot the rest."""
    folded = unicodedata.normalize("NFKD", name.replace("ı", "i").replace("ø", "o").replace("ß", "ss"))
    parts = re.sub(r"[^a-z ]", "", folded.encode("ascii", "ignore").decode().lower()).split()
    return f"{parts[0]}.{''.join(parts[1:])}@{DEMO_DOMAIN}"


def database_has_users(session: Session) -> bool:
    return session.scalar(sa.select(sa.func.count()).select_from(User)) > 0


def demo_logins(session: Session) -> list[DemoLogin]:
    """The demo people still in the database (for `make run` to print on every start)."""
    emails = [email_for(name) for name, *_ in PEOPLE]
    users = session.scalars(sa.select(User).where(User.email.in_(emails), User.active)).all()  # type: ignore[attr-defined]
    return [DemoLogin(u.email, u.name, u.role) for u in sorted(users, key=lambda u: emails.index(u.email))]


def seed_demo(session: Session, *, now: datetime | None = None, password: str = DEMO_PASSWORD,
              base_url: str = "http://127.0.0.1:8000") -> list[DemoLogin]:
    """Create the demo organisation; returns the logins to print. Assumes an empty database."""
    now = now or utcnow()
    rng = random.Random(20261123)
    history = _History()
    password_hash = hash_password(password)  # one hash for all demo users keeps seeding fast

    users: dict[str, User] = {}
    for name, department, title, role in PEOPLE:
        user = User(
            email=email_for(name), name=name, department=department, title=title, role=role,
            password_hash=password_hash, created_at=now - timedelta(days=120),
        )
        session.add(user)
        users[name] = user
    session.flush()
    for user in users.values():
        history.add(actor="seed", action=Action.USER_CREATED, subject=f"user:{user.id}",
                     details={"email": user.email, "role": user.role}, at=user.created_at)

    resources: dict[str, Resource] = {}
    for name, kind, description, approvers, required, max_duration, auto in RESOURCES:
        resource = Resource(
            name=name, kind=kind, description=description, owner_id=users[approvers[0]].id,
            approvals_required=required, max_duration_seconds=max_duration, auto_approve=auto,
            created_at=now - timedelta(days=100),
        )
        session.add(resource)
        resources[name] = resource
    session.flush()
    for name, _kind, _desc, approvers, *_ in RESOURCES:
        for approver in approvers:
            session.add(ResourceApprover(resource_id=resources[name].id, user_id=users[approver].id))
        history.add(actor="seed", action=Action.RESOURCE_CREATED, subject=f"resource:{resources[name].id}",
                     details={"name": name, "approvers": [users[a].email for a in approvers]},
                     at=resources[name].created_at)

    _seed_agents(session, history, now, resources, base_url)
    _seed_history(session, history, rng, now, users, resources)
    _seed_team_access(session, history, rng, now, users, resources)
    session.flush()
    history.write(session)
    return [DemoLogin(u.email, u.name, u.role) for u in users.values()]


def _seed_history(
    session: Session, history: _History, rng: random.Random, now: datetime, users: dict[str, User],
    resources: dict[str, Resource],
) -> None:
    """About forty finished requests over the last two months, each with its audit trail."""
    members = [u for u in users.values() if u.role != Role.admin]
    outcomes = [RequestStatus.approved] * 5 + [RequestStatus.rejected, RequestStatus.expired,
                                               RequestStatus.canceled, RequestStatus.revoked]
    approvers_by_resource: dict[int, list[User]] = {}
    for name, _k, _d, approver_names, *_ in RESOURCES:
        approvers_by_resource[resources[name].id] = [users[a] for a in approver_names]  # type: ignore[index]

    failed_one = False
    for number in range(1, 41):
        requester = rng.choice(members)
        resource = rng.choice(list(resources.values()))
        approvers = [a for a in approvers_by_resource[resource.id] if a.id != requester.id]  # type: ignore[index]
        if not approvers:
            continue
        created = now - timedelta(days=rng.uniform(1, 60), minutes=rng.randint(0, 600))
        duration = resource.max_duration_seconds
        status = RequestStatus.approved if resource.auto_approve else rng.choice(outcomes)
        request = AccessRequest(
            requester_id=requester.id, resource_id=resource.id, status=status,
            reason=rng.choice(REASONS), duration_seconds=duration,
            workflow_id=f"seed-request-{number}", created_at=created, updated_at=created,
            pending_until=created + timedelta(seconds=resource.pending_ttl_seconds),
        )
        session.add(request)
        session.flush()
        subject = f"request:{request.id}"
        history.add(actor=requester.email, actor_id=requester.id, action=Action.REQUEST_SUBMITTED,
                     subject=subject, details={"resource": resource.name, "reason": request.reason}, at=created)
        decided = created + timedelta(minutes=rng.randint(5, 240))
        if status in (RequestStatus.approved, RequestStatus.revoked):
            _approve(session, history, request, resource, approvers, decided, duration, now, status)
        elif status == RequestStatus.rejected:
            approver = approvers[0]
            session.add(Approval(request_id=request.id, approver_id=approver.id, decision=Decision.reject,
                                 comment="Please use the staging account for this.", created_at=decided))
            _close(session, history, request, status, decided, approver, Action.REQUEST_REJECTED)
            if not failed_one:  # the outbox shows what a delivery that gave up looks like
                failed_one = True
                session.add(Notification(
                    channel="slack", recipient=requester.email, request_id=request.id, created_at=decided,
                    subject=f"Your request for {resource.name} was rejected", status=NotificationStatus.failed,
                    body=f"Your request for {resource.name} was rejected.\n\nReason: Please use the staging account.",
                    dedup_key=f"slack:{request.id}:request.rejected:{requester.email}", attempts=5,
                    last_error="Slack answered 503 Service Unavailable five times; the email went out."))
        elif status == RequestStatus.canceled:
            _close(session, history, request, status, decided, requester, Action.REQUEST_CANCELED)
        else:
            _close(session, history, request, status, request.pending_until, None, Action.REQUEST_EXPIRED)  # type: ignore[arg-type]


def _seed_team_access(
    session: Session, history: _History, rng: random.Random, now: datetime, users: dict[str, User],
    resources: dict[str, Resource],
) -> None:
    """TEAM_ACCESS as approved requests whose grants are still on, each with its audit trail."""
    approver_names = {name: names for name, _k, _d, names, *_ in RESOURCES}
    number = 0
    for department, resource_name in TEAM_ACCESS:
        resource = resources[resource_name]
        team = [users[name] for name, dept, *_ in PEOPLE if dept == department]
        for member in team[:-1]:
            holds = session.scalar(sa.select(Grant.id).where(
                Grant.user_id == member.id, Grant.resource_id == resource.id, Grant.revoked_at.is_(None)))  # type: ignore[union-attr]
            approvers = [users[a] for a in approver_names[resource_name] if users[a].id != member.id]
            if holds is not None or not approvers:
                continue
            number += 1
            duration = resource.max_duration_seconds
            # A time-bound grant was renewed in the last week, so it is still on.
            created = now - timedelta(days=rng.uniform(1, 7) if duration else rng.uniform(60, 110))
            request = AccessRequest(
                requester_id=member.id, resource_id=resource.id, status=RequestStatus.approved,
                reason=f"Standard {department} access.", duration_seconds=duration,
                workflow_id=f"seed-team-{number}", created_at=created, updated_at=created,
                pending_until=created + timedelta(seconds=resource.pending_ttl_seconds),
            )
            session.add(request)
            session.flush()
            history.add(actor=member.email, actor_id=member.id, action=Action.REQUEST_SUBMITTED,
                         subject=f"request:{request.id}", details={"resource": resource.name, "reason": request.reason},
                         at=created)
            _approve(session, history, request, resource, approvers, created + timedelta(minutes=rng.randint(5, 240)),
                     duration, now, RequestStatus.approved)


def _approve(session: Session, history: _History, request: AccessRequest, resource: Resource, approvers: list[User],
             decided: datetime, duration: int | None, now: datetime, status: str) -> None:
    deciders = approvers[: resource.approvals_required]
    for approver in deciders:
        session.add(Approval(request_id=request.id, approver_id=approver.id, decision=Decision.approve,
                             comment="", created_at=decided))
    last = deciders[-1] if deciders else None
    _close(session, history, request, RequestStatus.approved, decided, last,
           Action.REQUEST_AUTO_APPROVED if resource.auto_approve else Action.REQUEST_APPROVED)
    expires = decided + timedelta(seconds=duration) if duration else None
    grant = Grant(request_id=request.id, user_id=request.requester_id, resource_id=resource.id,
                  granted_at=decided, expires_at=expires, granted_by_workflow=request.workflow_id)
    session.add(grant)
    session.flush()
    history.add(actor="workflow", action=Action.GRANT_CREATED, subject=f"grant:{grant.id}",
                 details={"request": request.id, "expires_at": expires.isoformat() if expires else None}, at=decided)
    ended = None
    if status == RequestStatus.revoked:
        ended = decided + timedelta(hours=2)
    elif expires is not None and expires < now:
        ended = expires
    if ended is not None:
        grant.revoked_at, grant.state = ended, GrantState.removed
        grant.revoked_by_workflow = request.workflow_id
        request.status = RequestStatus.revoked
        request.updated_at = ended
        history.add(actor="workflow", action=Action.GRANT_REVOKED, subject=f"grant:{grant.id}",
                     details={"request": request.id, "early": status == RequestStatus.revoked,
                              "reason": "revoked early" if status == RequestStatus.revoked else "expired"}, at=ended)


# Agents that work with no set-up, so fulfilment is at work after `make run`: a person carries
# out payroll and netsuite grants (a task on /tasks for the resource's owner), and a signed
# webhook tells the app's own demo receiver about salesforce ones (each lands in the outbox).
MANUAL_TARGETS = {"payroll": "Payroll admin console: HR role", "netsuite": "NetSuite role: AP clerk"}
WEBHOOK_TARGETS = {"salesforce": "Sales Cloud users"}


def _seed_agents(session: Session, history: _History, now: datetime, resources: dict[str, Resource],
                 base_url: str) -> None:
    created = now - timedelta(days=100)
    desk = Agent(name="finance-service-desk", kind="manual", settings={}, created_at=created)
    hook = Agent(name="demo-webhook", kind="webhook", created_at=created,
                 settings={"url": base_url.rstrip("/") + DEMO_RECEIVER_PATH, "secret_env": DEMO_SECRET_ENV})
    session.add_all([desk, hook])
    session.flush()
    for agent, targets in ((desk, MANUAL_TARGETS), (hook, WEBHOOK_TARGETS)):
        for name, target in targets.items():
            resources[name].agent_id, resources[name].target = agent.id, target
        history.add(actor="seed", action=Action.AGENT_CREATED, subject=f"agent:{agent.id}",
                     details={"name": agent.name, "kind": agent.kind, "resources": sorted(targets)}, at=created)


def _close(session: Session, history: _History, request: AccessRequest, status: str, at: datetime,
           decider: User | None, action: Action) -> None:
    request.status = status
    request.decided_at = at
    request.updated_at = at
    request.decided_by_id = decider.id if decider else None
    history.add(actor=decider.email if decider else "workflow",
                 actor_id=decider.id if decider else None, action=action,
                 subject=f"request:{request.id}", details={"status": status}, at=at)


REASONS = [
    "On call this week and need to investigate production alerts.",
    "Quarter-end reconciliation needs read access to the ledger.",
    "Migrating the billing service; need to inspect the staging resources.",
    "Building the churn dashboard for the leadership review.",
    "Onboarding to the platform team, shadowing the on-call rotation.",
    "Customer escalation: need to check the account configuration.",
    "Preparing the annual compensation review with the finance team.",
    "Debugging a failed deploy pipeline in the organisation settings.",
    "Running the monthly data quality audit on the orders replica.",
    "Working remotely from the Lisbon office this month.",
]
