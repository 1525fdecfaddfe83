"""The schema: every app table, in SQLModel.

DBOS keeps its own tables elsewhere (a separate SQLite file, or the `dbos` schema on
PostgreSQL); alembic is told to ignore them. Times are stored in UTC and always come
back timezone-aware, on SQLite too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlmodel import JSON, Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp that is stored in UTC and read back timezone-aware on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _timestamp(*, index: bool = False, nullable: bool = False, default: bool = False) -> Any:
    return Field(
        default_factory=utcnow if default else None,
        sa_type=UTCDateTime,
        nullable=nullable,
        index=index,
    )


class Role(StrEnum):
    member = "member"
    approver = "approver"
    admin = "admin"


class ResourceKind(StrEnum):
    app = "app"
    group = "group"
    database = "database"


class RequestStatus(StrEnum):
    requested = "requested"
    approved = "approved"
    rejected = "rejected"
    canceled = "canceled"
    expired = "expired"
    revoked = "revoked"
    failed = "failed"


class Decision(StrEnum):
    approve = "approve"
    reject = "reject"


class GrantState(StrEnum):
    """Where a grant stands in its target system: active only once its agent confirmed the
    change, removed only once the removal was confirmed (a resource without an agent goes
    straight to active and to removed)."""

    provisioning = "provisioning"
    active = "active"
    ending = "ending"
    removed = "removed"


class TaskAction(StrEnum):
    add = "add"
    remove = "remove"


class TaskStatus(StrEnum):
    queued = "queued"  # waiting for its agent's queue
    running = "running"
    waiting = "waiting"  # for a person: a manual task, or a failure someone must look at
    failed = "failed"  # refused by the target; stays open and loud until retried or resolved
    done = "done"
    cancelled = "cancelled"  # an add that the end of its grant made pointless


OPEN_TASK_STATUSES = (TaskStatus.queued, TaskStatus.running, TaskStatus.waiting, TaskStatus.failed)


class DriftPolicy(StrEnum):
    report = "report"  # show members without a grant and grants without a member
    correct = "correct"  # and remove the extra, add the missing


class NotificationStatus(StrEnum):
    queued = "queued"
    sent = "sent"
    failed = "failed"


class User(SQLModel, table=True):
    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=320, unique=True, index=True)
    name: str = Field(max_length=200, index=True)  # the requests table sorts by requester name
    department: str = Field(default="", max_length=100, index=True)
    title: str = Field(default="", max_length=100, index=True)
    role: str = Field(default=Role.member, max_length=16)
    password_hash: str | None = Field(default=None, max_length=255)
    active: bool = True
    created_at: datetime = _timestamp(default=True)
    # An account for scripts: no password, never decides requests, holds tokens an admin issues.
    is_service: bool = Field(default=False, sa_column_kwargs={"server_default": sa.false()})
    # An IANA name ("Europe/Paris") for the times pages show; empty: the browser's, else UTC.
    time_zone: str = Field(default="", max_length=64, sa_column_kwargs={"server_default": ""})
    # Who the OpenID provider says this is ("<issuer> <sub>"): a later sign-in finds them by it,
    # even after their email changed. None until they first sign in through the provider.
    oidc_subject: str | None = Field(default=None, max_length=400, unique=True)


class Agent(SQLModel, table=True):
    """A connection to a target system (webapp/agents), or `manual`: a person does the work.

    `settings` never holds a secret: it names an environment variable or a file
    (`password_env`, `token_file`, ...). Each agent has its own DBOS queue, `agent-<id>`."""

    __tablename__ = "agents"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True)
    kind: str = Field(max_length=16)
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    concurrency: int = 4
    rate_limit: int = 60  # operations per rate_period_seconds
    rate_period_seconds: float = 60.0
    drift_interval_seconds: int = 3600
    # What the last operation or check found: None until something was tried.
    healthy: bool | None = None
    last_error: str | None = Field(default=None, max_length=2000)
    checked_at: datetime | None = _timestamp(nullable=True)
    drift_checked_at: datetime | None = _timestamp(nullable=True)
    drift_found: int = 0
    created_at: datetime = _timestamp(default=True)


class Resource(SQLModel, table=True):
    __tablename__ = "resources"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=120, unique=True, index=True)
    kind: str = Field(default=ResourceKind.app, max_length=16, index=True)
    description: str = Field(default="", max_length=2000)
    owner_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    approvals_required: int = Field(default=1, ge=1)
    # Longest grant in seconds; None allows permanent access.
    max_duration_seconds: int | None = None
    auto_approve: bool = False
    # How long a request may wait for decisions before it expires.
    pending_ttl_seconds: int = 72 * 3600
    created_at: datetime = _timestamp(default=True)
    # Where a grant takes effect: the agent, and the group, role or DN it manages there.
    agent_id: int | None = Field(default=None, foreign_key="agents.id", index=True)
    target: str = Field(default="", max_length=500, sa_column_kwargs={"server_default": ""})
    drift_policy: str = Field(default=DriftPolicy.report, max_length=16,
                              sa_column_kwargs={"server_default": DriftPolicy.report.value})


class ResourceApprover(SQLModel, table=True):
    __tablename__ = "resource_approvers"

    resource_id: int = Field(foreign_key="resources.id", primary_key=True)
    user_id: int = Field(foreign_key="users.id", primary_key=True, index=True)


class AccessRequest(SQLModel, table=True):
    __tablename__ = "access_requests"
    __table_args__ = (
        sa.Index("ix_access_requests_status_created", "status", "created_at"),
        sa.Index("ix_access_requests_requester_status", "requester_id", "status"),
        sa.Index("ix_access_requests_resource_status", "resource_id", "status"),
        # The requests table orders by a column, then by id (webapp/services/request_table.py):
        # these let a page be read from an index instead of sorting every visible row.
        sa.Index("ix_access_requests_by_status", "status", "id"),
        sa.Index("ix_access_requests_by_requester", "requester_id", "id"),
        sa.Index("ix_access_requests_by_duration", "duration_seconds", "id"),
        sa.Index("ix_access_requests_by_updated", "updated_at", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    requester_id: int = Field(foreign_key="users.id")
    resource_id: int = Field(foreign_key="resources.id")
    reason: str = Field(max_length=1000)
    # Requested grant length in seconds; None asks for permanent access.
    duration_seconds: int | None = None
    status: str = Field(default=RequestStatus.requested, max_length=16)
    workflow_id: str = Field(max_length=100, unique=True)
    created_at: datetime = _timestamp(default=True, index=True)
    updated_at: datetime = _timestamp(default=True)
    pending_until: datetime | None = _timestamp(nullable=True)
    decided_at: datetime | None = _timestamp(nullable=True, index=True)  # "approved today"
    decided_by_id: int | None = Field(default=None, foreign_key="users.id")
    error: str | None = Field(default=None, max_length=2000)
    # An extension: on approval, this grant (the requester's, for the same resource) ends later
    # instead of a new grant starting. No foreign key: grants point at requests already.
    extends_grant_id: int | None = Field(default=None, index=True)


class Grant(SQLModel, table=True):
    __tablename__ = "grants"
    __table_args__ = (sa.Index("ix_grants_user_resource", "user_id", "resource_id"),)

    id: int | None = Field(default=None, primary_key=True)
    request_id: int | None = Field(default=None, foreign_key="access_requests.id", unique=True)
    user_id: int = Field(foreign_key="users.id")
    resource_id: int = Field(foreign_key="resources.id", index=True)
    granted_at: datetime = _timestamp(default=True)
    expires_at: datetime | None = _timestamp(nullable=True, index=True)
    revoked_at: datetime | None = _timestamp(nullable=True, index=True)
    granted_by_workflow: str | None = Field(default=None, max_length=100)
    revoked_by_workflow: str | None = Field(default=None, max_length=100)
    revoked_by_id: int | None = Field(default=None, foreign_key="users.id")
    state: str = Field(default=GrantState.active, max_length=16, index=True,
                       sa_column_kwargs={"server_default": GrantState.active.value})


class FulfilmentTask(SQLModel, table=True):
    """One change in a target system: add a grant's holder, or remove them. Carried out by the
    durable workflow `workflow_id` through the resource's agent, or by a person (manual)."""

    __tablename__ = "fulfilment_tasks"
    __table_args__ = (sa.Index("ix_fulfilment_tasks_status_id", "status", "id"),)

    id: int | None = Field(default=None, primary_key=True)
    grant_id: int = Field(foreign_key="grants.id", index=True)
    action: str = Field(max_length=8)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    resource_id: int = Field(foreign_key="resources.id", index=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    target: str = Field(max_length=500)
    status: str = Field(default=TaskStatus.queued, max_length=16)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    workflow_id: str = Field(max_length=100, unique=True)
    created_at: datetime = _timestamp(default=True, index=True)
    updated_at: datetime = _timestamp(default=True)
    finished_at: datetime | None = _timestamp(nullable=True)
    # Who closed it by hand (Done, Can't do, resolved), and what they wrote.
    resolved_by_id: int | None = Field(default=None, foreign_key="users.id")
    note: str = Field(default="", max_length=1000)


class DriftFinding(SQLModel, table=True):
    """What the last drift check of a resource found in its target: a member with no grant
    (`extra`: access given outside Gatehouse) or a grant with no membership (`missing`).
    Each check replaces the resource's findings; corrections are in the audit log."""

    __tablename__ = "drift_findings"

    id: int | None = Field(default=None, primary_key=True)
    agent_id: int = Field(foreign_key="agents.id", index=True)
    resource_id: int = Field(foreign_key="resources.id", index=True)
    kind: str = Field(max_length=8)  # extra / missing
    member: str = Field(max_length=500)  # as the target names it
    user_id: int | None = Field(default=None, foreign_key="users.id")  # a missing member's person
    found_at: datetime = _timestamp(default=True)
    corrected: bool = False


class Approval(SQLModel, table=True):
    """One row per decision message, including late or repeated ones (counted=False)."""

    __tablename__ = "approvals"

    id: int | None = Field(default=None, primary_key=True)
    request_id: int = Field(foreign_key="access_requests.id", index=True)
    approver_id: int = Field(foreign_key="users.id", index=True)
    decision: str = Field(max_length=16)
    comment: str = Field(default="", max_length=1000)
    counted: bool = True
    created_at: datetime = _timestamp(default=True)


class AuditEvent(SQLModel, table=True):
    """The append-only log of every state change; its id orders the live feed."""

    __tablename__ = "audit_events"
    __table_args__ = (
        # The live feed replays what one person may see: their requests' events, in id order.
        sa.Index("ix_audit_events_request_id_id", "request_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _timestamp(default=True, index=True)
    actor: str = Field(max_length=320, index=True)
    actor_id: int | None = Field(default=None, foreign_key="users.id")
    action: str = Field(max_length=64, index=True)
    subject: str = Field(max_length=200, index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    # The access request the event concerns (its own, or its grant's), for who may see it.
    request_id: int | None = Field(default=None)
    # The API token the change was made with (None: a browser session, or the system).
    token_id: int | None = Field(default=None)
    # Where a person made the change: web, api, slack or email (None: Gatehouse itself).
    channel: str | None = Field(default=None, max_length=16)


class OidcLogin(SQLModel, table=True):
    """A sign-in through the OpenID provider, between leaving for it and coming back: the
    callback deletes the row it uses, so each `state` works once."""

    __tablename__ = "oidc_logins"

    state: str = Field(primary_key=True, max_length=64)
    nonce: str = Field(max_length=64)
    code_verifier: str = Field(max_length=128)
    next_url: str = Field(default="/", max_length=2000)
    created_at: datetime = _timestamp(default=True, index=True)


class DecisionLinkUse(SQLModel, table=True):
    """An emailed approve or reject link that decided: each link works once. Written in the
    decision's own transaction (webapp.services.access_changes), so a link is spent exactly
    when its decision is recorded."""

    __tablename__ = "decision_link_uses"

    link_id: str = Field(primary_key=True, max_length=32)
    request_id: int = Field(foreign_key="access_requests.id", index=True)
    user_id: int = Field(foreign_key="users.id")
    decision: str = Field(max_length=16)
    used_at: datetime = _timestamp(default=True)


class ErrorRecord(SQLModel, table=True):
    __tablename__ = "error_records"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _timestamp(default=True, index=True)
    source: str = Field(max_length=100, index=True)
    workflow_id: str | None = Field(default=None, max_length=100, index=True)
    request_id: int | None = Field(default=None, foreign_key="access_requests.id", index=True)
    message: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class Notification(SQLModel, table=True):
    """Every message sent on any channel; the dedup key makes delivery idempotent."""

    __tablename__ = "notifications"

    id: int | None = Field(default=None, primary_key=True)
    channel: str = Field(max_length=16, index=True)
    recipient: str = Field(max_length=320, index=True)
    subject: str = Field(max_length=300)
    body: str = Field(max_length=10000)
    status: str = Field(default=NotificationStatus.queued, max_length=16, index=True)
    dedup_key: str = Field(max_length=300, unique=True)
    request_id: int | None = Field(default=None, foreign_key="access_requests.id", index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _timestamp(default=True, index=True)
    sent_at: datetime | None = _timestamp(nullable=True)


class UserSession(SQLModel, table=True):
    """A signed-in browser. The cookie holds a random token; only its hash is stored, so
    a database leak does not leak sessions, and deleting the row signs the browser out."""

    __tablename__ = "user_sessions"

    token_hash: str = Field(max_length=64, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    created_at: datetime = _timestamp(default=True)
    last_seen_at: datetime = _timestamp(default=True, index=True)
    ip: str = Field(default="", max_length=64)
    user_agent: str = Field(default="", max_length=300)


class TokenScope(StrEnum):
    """What a token may do; its person's role limits it further."""

    read = "read"  # every page and JSON read
    decide = "decide"  # submit, approve, reject and cancel requests
    operate = "operate"  # admin and ops changes: people, resources, grants, imports, workflows


class ApiToken(SQLModel, table=True):
    """A personal bearer token for curl and scripts; shown once, stored hashed, expiring."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    name: str = Field(max_length=100)
    token_hash: str = Field(max_length=64, unique=True)
    prefix: str = Field(max_length=16)
    created_at: datetime = _timestamp(default=True)
    created_by_id: int | None = Field(default=None, foreign_key="users.id")
    last_used_at: datetime | None = _timestamp(nullable=True)
    revoked_at: datetime | None = _timestamp(nullable=True)
    expires_at: datetime = _timestamp()
    scopes: str = Field(max_length=64, sa_column_kwargs={"server_default": "read,decide,operate"})

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(s for s in self.scopes.split(",") if s)


class LoginAttempt(SQLModel, table=True):
    """Sign-in attempts, counted per account and per address to throttle guessing."""

    __tablename__ = "login_attempts"
    __table_args__ = (
        sa.Index("ix_login_attempts_email_at", "email", "at"),
        sa.Index("ix_login_attempts_ip_at", "ip", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _timestamp(default=True)
    email: str = Field(max_length=320)
    ip: str = Field(max_length=64)
    succeeded: bool = False


class ExecutorHeartbeat(SQLModel, table=True):
    """One row per app process sharing the database, rewritten every few seconds by the process
    itself (webapp/services/executors.py): DBOS keeps no table of its executors, and the ops console
    must tell a live one from one that is gone."""

    __tablename__ = "executor_heartbeat"

    executor_id: str = Field(max_length=200, primary_key=True)
    app_version: str = Field(max_length=100)
    hostname: str = Field(max_length=255)
    pid: int
    started_at: datetime = _timestamp()
    last_seen: datetime = _timestamp()
    # Takeover: the live executor that last adopted this one's workflows, when, and how many in all.
    adopted_by: str | None = Field(default=None, max_length=200)
    adopted_at: datetime | None = _timestamp(nullable=True)
    adopted_count: int = Field(default=0, sa_column_kwargs={"server_default": "0"})


# Bulk import -------------------------------------------------------------------------------


class ImportStatus(StrEnum):
    running = "running"
    cancelling = "cancelling"
    cancelled = "cancelled"
    finished = "finished"
    failed = "failed"  # finished, but some chunks failed (they can be retried)


class ChunkStatus(StrEnum):
    pending = "pending"  # not started in any run yet
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    cancelled = "cancelled"  # the job was cancelled before this chunk ran


class ImportJob(SQLModel, table=True):
    """One bulk import: where from, how much, how it went. Each start, resume or retry is a
    run: a parent workflow `import-<id>-run-<run>` that enqueues the chunks still to do."""

    __tablename__ = "import_jobs"

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(max_length=500)
    source_kind: str = Field(max_length=8)  # "url" or "file"
    count: int
    seed: str = Field(max_length=100)
    nat: str = Field(default="", max_length=100)
    chunk_size: int
    page_size: int
    create_users: bool = False
    status: str = Field(default=ImportStatus.running, max_length=16, index=True)
    run: int = 1
    workflow_id: str = Field(max_length=100, index=True)
    imported: int = 0
    invalid: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_failed: int = 0
    created_by: str = Field(default="", max_length=320)
    error: str | None = Field(default=None, max_length=2000)
    created_at: datetime = _timestamp(default=True, index=True)
    started_at: datetime = _timestamp(default=True)
    updated_at: datetime = _timestamp(default=True)
    finished_at: datetime | None = _timestamp(nullable=True)


class ImportChunk(SQLModel, table=True):
    """A slice of one fetched page, written by one child workflow in one transaction."""

    __tablename__ = "import_chunks"
    __table_args__ = (sa.UniqueConstraint("job_id", "number", name="uq_import_chunks_job_number"),)

    id: int | None = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="import_jobs.id", index=True)
    number: int
    page: int
    page_offset: int
    size: int
    status: str = Field(default=ChunkStatus.pending, max_length=16)
    imported: int = 0
    invalid: int = 0
    attempts: int = 0
    workflow_id: str | None = Field(default=None, max_length=100)
    error: str | None = Field(default=None, max_length=2000)
    started_at: datetime | None = _timestamp(nullable=True)
    finished_at: datetime | None = _timestamp(nullable=True)


class ImportedPerson(SQLModel, table=True):
    """Every field of a randomuser.me person, flattened; one row per login uuid."""

    __tablename__ = "imported_people"

    id: int | None = Field(default=None, primary_key=True)
    login_uuid: str = Field(max_length=36, unique=True)
    gender: str = Field(max_length=16)
    name_title: str = Field(max_length=50)
    name_first: str = Field(max_length=100)
    name_last: str = Field(max_length=100)
    street_number: int | None = None
    street_name: str = Field(max_length=200)
    city: str = Field(max_length=100)
    state: str = Field(max_length=100)
    country: str = Field(max_length=100)
    postcode: str = Field(max_length=32)  # numbers and strings both occur; kept as text
    latitude: float
    longitude: float
    timezone_offset: str = Field(max_length=8)
    timezone_description: str = Field(max_length=200)
    email: str = Field(max_length=320, index=True)
    login_username: str = Field(max_length=100)
    login_password: str = Field(max_length=100)
    login_salt: str = Field(max_length=64)
    login_md5: str = Field(max_length=32)
    login_sha1: str = Field(max_length=40)
    login_sha256: str = Field(max_length=64)
    dob_date: datetime = _timestamp()
    dob_age: int
    registered_date: datetime = _timestamp()
    registered_age: int
    phone: str = Field(max_length=50)
    cell: str = Field(max_length=50)
    id_name: str = Field(max_length=50)
    id_value: str | None = Field(default=None, max_length=100)
    picture_large: str = Field(max_length=500)
    picture_medium: str = Field(max_length=500)
    picture_thumbnail: str = Field(max_length=500)
    nat: str = Field(max_length=4, index=True)
    user_id: int | None = Field(default=None, foreign_key="users.id", index=True)
    import_job_id: int | None = Field(default=None, foreign_key="import_jobs.id", index=True)
    imported_at: datetime = _timestamp(default=True)
    updated_at: datetime = _timestamp(default=True)
