"""The JSON API as OpenAPI 3.1: what `/openapi.json` serves and `/docs` shows.

Every URL that answers JSON (to `Accept: application/json`) is an operation in
`OPERATIONS`, keyed by method and path as the spec writes them. An operation names the
pydantic models its endpoint validates with (the query string, the form body), so the spec
and the validation cannot drift; the shape of each answer (the strict `Shape` models
below: a field the spec does not name is a violation); and the statuses only it returns.
The rest comes from the route: summary and description from the endpoint's docstring
(which `guarded_route` keeps on its guard), who may call it from the guard's `access`, and
from that its security and its 401 and 403; a path parameter brings a 404, a POST a 400.
Routes not listed answer HTML only and are left out of the spec.

tests/test_openapi.py runs schemathesis over this spec against the app: an answer the
spec does not describe fails it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import models_json_schema
from starlette.routing import BaseRoute
from starlette.schemas import BaseSchemaGenerator

from webapp.config import Settings
from webapp.core.forms import FormModel
from webapp.core.models import Decision, GrantState, RequestStatus, TaskStatus
from webapp.services.access_history import AccessAtQuery
from webapp.services.agent_settings import AgentRow, AgentTaskRow
from webapp.services.logs import AuditQuery, ErrorQuery
from webapp.services.request_table import Order, RequestQuery, RequestRow, SortKey
from webapp.web.account import SettingsForm
from webapp.web.admin.agents import AgentForm
from webapp.web.csrf import SESSION_COOKIE
from webapp.web.ops.batches import LoadForm, ShutdownForm, SubmitForm
from webapp.web.ops.runtime import ExecutorQuery, ScheduleQuery, ScheduleRow
from webapp.web.ops.workflows import ActionForm, WorkflowDetail, WorkflowQuery, WorkflowRow
from webapp.web.requests.bulk import BulkResult
from webapp.web.requests.forms import BulkDecisionForm, DecisionForm, RejectForm, RequestForm, RevokeForm
from webapp.web.security import Access
from webapp.web.tasks import NoteForm, ReasonForm, TaskListQuery

OPENAPI_VERSION = "3.1.0"
FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
REF = "#/components/schemas/{model}"
SECURITY = [{"bearerAuth": []}, {"cookieAuth": []}]
ID_PARAMETER = {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
DESCRIPTION = """\
Every URL below also serves the browser; send `Accept: application/json` to get JSON.

Scripts authenticate with `Authorization: Bearer <token>`. Tokens are personal: each person
issues their own at /account/tokens (admins issue those of service accounts), each expires,
and each carries scopes: `read` (every GET), `decide` (submitting, approving, rejecting and
cancelling requests) and `operate` (admin and ops changes). A token acts as its person, with
their role, within its scopes; audit rows written with it name it (`token_id`). A browser
session cookie works as well, but then every POST must carry the CSRF token (the
`X-CSRF-Token` header); token requests need none.

Errors are `{"error": message, "status": code}`; when the input was at fault, `fields`
says what is wrong with each field. Form bodies are `application/x-www-form-urlencoded`
(multipart works too); unknown fields are ignored.
"""


# Answer shapes ------------------------------------------------------------------------------

class Shape(BaseModel):
    """A JSON answer as the spec states it; no field beyond these."""

    model_config = ConfigDict(extra="forbid")


class Error(Shape):
    """Every error answer."""

    error: str = Field(description="What went wrong, in a sentence for people.")
    status: int = Field(description="The HTTP status, repeated.")
    fields: dict[str, str] = Field(default_factory=dict,
                                   description="Input at fault: field name -> what is wrong with it.")


class Liveness(Shape):
    status: Literal["ok"]


class Readiness(Shape):
    status: Literal["ready", "unavailable"]
    checks: dict[str, str] = Field(description='"database" and "dbos": "ok", or the error.')


class Counters(Shape):
    """The dashboard counters, counting only what the caller may see."""

    pending: int
    approved_today: int = Field(description="Since midnight UTC.")
    expiring_soon: int = Field(description="Active grants that end within 24 hours.")
    errors: int = Field(description="Error records of the last 24 hours.")
    drift: int = Field(description="Admins: differences between targets and grants still standing (others: 0).")


class Paging(Shape):
    page: int
    page_size: int
    sort: SortKey
    order: Order
    has_previous: bool
    has_next: bool
    previous: str | None = Field(description="URL of the previous page.")
    next: str | None = Field(description="URL of the next page.")
    total: int
    total_capped: bool = Field(description="True: there are more than `total` rows.")


class RequestRows(RootModel[list[RequestRow]]):
    """Requests, each with `actions`: what the caller may do on it."""


class RequestTable(Shape):
    rows: list[RequestRow] = Field(description="Each with `actions`: what the caller may do on it.")
    paging: Paging


class RequestCreated(Shape):
    id: int
    workflow_id: str
    url: str


class Approval(Shape):
    approver: str = Field(description="The approver's name.")
    decision: Decision
    counted: bool


class GrantTask(Shape):
    id: int
    action: Literal["add", "remove"]
    status: TaskStatus
    url: str


class Grant(Shape):
    id: int
    state: GrantState = Field(description="active once its agent confirmed the access; removed once it is gone.")
    expires_at: datetime | None = Field(description="None: permanent.")
    revoked_at: datetime | None
    tasks: list[GrantTask] = Field(description="The fulfilment tasks that carry it into its target system.")


class Task(Shape):
    id: int
    action: Literal["add", "remove"]
    status: TaskStatus
    what: str = Field(description="The task as a sentence: Add <person> to <resource> until <time>.")
    person: str
    resource: str
    agent: str
    agent_kind: str
    target: str
    attempts: int
    last_error: str | None
    note: str
    grant_id: int
    request_id: int | None
    workflow_id: str
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    url: str


class TaskList(Shape):
    to_do: list[Task] = Field(description="Open tasks you may act on, oldest first.")
    tasks: list[Task] = Field(description="Admins: every task, newest first (empty for others).")
    total: int
    page: int
    page_size: int


class TaskEvent(Shape):
    at: datetime
    action: str
    actor: str
    details: dict[str, Any]


class TaskDetail(Task):
    actions: list[Literal["done", "cant", "retry", "resolve"]] = Field(description="What you may do now.")
    history: list[TaskEvent]


class AgentList(Shape):
    agents: list[AgentRow] = Field(description="Every agent, by name: health, queue, load and drift.")


class AgentResource(Shape):
    id: int
    name: str
    target: str
    url: str


class DriftShown(Shape):
    resource_id: int
    resource: str
    kind: Literal["extra", "missing"] = Field(description="extra: a member with no grant; missing: a grant with "
                                                          "no membership.")
    member: str = Field(description="As the target names it.")
    person: str | None
    found_at: datetime
    corrected: bool


class AgentDetail(Shape):
    agent: AgentRow
    tasks: list[AgentTaskRow] = Field(description="Its newest tasks.")
    resources: list[AgentResource]
    drift: list[DriftShown] = Field(description="What its last drift check found.")


class AgentSaved(Shape):
    agent: AgentRow
    url: str


class AgentChecked(Shape):
    agent_id: int
    healthy: bool | None = Field(description="None for a manual agent: there is nothing to connect to.")
    message: str


class DriftChecked(Shape):
    agent_id: int
    checked: int = Field(description="Resources compared.")
    found: int = Field(description="Differences found.")
    corrected: int = Field(description="Differences corrected (resources set to correct).")
    standing: int = Field(description="Differences still standing.")
    errors: list[str] = Field(description="Targets that could not be read, and why.")


class TaskReplied(Shape):
    id: int
    applied: bool
    status: TaskStatus
    note: str


class RequestDetail(Shape):
    id: int
    status: RequestStatus
    requester: str = Field(description="The requester's email.")
    resource: str
    reason: str
    duration_seconds: int | None = Field(description="None: permanent.")
    workflow_id: str | None
    created_at: datetime
    error: str | None
    approvals: list[Approval]
    grant: Grant | None


class BulkDecided(Shape):
    results: list[BulkResult] = Field(description="One per selected request, in the order sent.")


class Waiting(Shape):
    waiting: int = Field(description="Pending requests you may decide and have not approved yet.")


class AccountSettings(Shape):
    email: str
    name: str
    role: str
    time_zone: str = Field(description="An IANA name; empty: the browser's zone, else UTC.")


class SettingsSaved(Shape):
    time_zone: str


class DecisionApplied(Shape):
    id: int
    status: RequestStatus = Field(description="The request's status after the decision.")
    applied: bool
    note: str
    approvals: int = Field(description="Approvals counted so far.")
    required: int = Field(description="Approvals the resource needs.")


class GrantRevoked(Shape):
    grant_id: int
    revoked: bool


class Holding(Shape):
    grant_id: int
    request_id: int | None
    resource: str
    expires_at: datetime | None = Field(description="None: permanent.")


class ErrorRecord(Shape):
    id: int
    at: datetime
    source: str
    workflow_id: str | None
    request_id: int | None
    message: dict[str, Any]


class ErrorLog(Shape):
    errors: list[ErrorRecord] = Field(description="Newest first, 50 at most.")
    older: str | None = Field(description="URL of the next (older) page.")


class AuditEvent(Shape):
    id: int
    at: datetime
    actor: str
    actor_id: int | None
    action: str
    subject: str
    details: dict[str, Any]
    request_id: int | None = Field(description="The access request the event concerns, if any.")
    token_id: int | None = Field(description="The API token the change was made with, if any.")
    channel: str | None = Field(description="Where a person made the change: web, api, slack or email "
                                            "(none: Gatehouse itself).")


class AuditLog(Shape):
    events: list[AuditEvent] = Field(description="Newest first, 50 at most.")
    older: str | None = Field(description="URL of the next (older) page.")


class WorkflowList(Shape):
    workflows: list[WorkflowRow] = Field(description="Newest first, 50 at most.")  # the endpoint's own rows
    next: str | None = Field(description="URL of the next (older) page.")
    previous: str | None


class WorkflowAnswer(RootModel[WorkflowDetail]):
    """One workflow, its steps and relatives (the endpoint's own dataclass)."""


class WorkflowActed(Shape):
    workflow_id: str
    action: Literal["cancel", "resume", "fork"]
    status_before: str
    forked_to: str | None = Field(description="The new workflow's id (fork only).")
    href: str


class Queue(Shape):
    name: str
    worker_concurrency: int | None
    global_concurrency: int | None
    limiter: dict[str, Any] | None = Field(description='{"limit": n, "period": seconds}, or None.')
    polling_interval: float
    waiting: int
    delayed: int
    running: dict[str, int] = Field(description="Executor id -> workflows it runs from this queue.")
    oldest_id: str | None
    oldest_since: datetime | None
    oldest_age: str | None


class Queues(Shape):
    queues: list[Queue]
    counts_capped: bool = Field(description="True: more workflows than were counted.")


class Schedules(Shape):
    schedules: list[ScheduleRow]  # the endpoint's own rows


class ScheduleActed(Shape):
    schedule: str
    status: str | None
    workflow_id: str | None = Field(description="The run a trigger started.")


class Executor(Shape):
    executor_id: str
    state: Literal["alive", "gone", "unknown"]
    app_version: str | None
    hostname: str | None
    pid: int | None
    started_at: datetime | None
    last_seen: datetime | None
    last_seen_ago: str | None
    running: int
    this_process: bool
    adopted_by: str | None = Field(description="The executor that last adopted this one's pending workflows.")
    adopted_at: datetime | None
    adopted_count: int = Field(description="How many of its workflows were adopted, in all.")


class ExecutorAdopted(Shape):
    executor_id: str
    adopted: list[str] = Field(description="The workflows this call handed to the live executors.")


class Executors(Shape):
    executors: list[Executor]
    counts_capped: bool


class RecentBatch(Shape):
    batch_id: str
    status: str
    created: datetime | None
    count: int | None = Field(description="Known once the batch has enqueued everything.")
    href: str


class Batches(Shape):
    batches: list[RecentBatch] = Field(description="Newest first, 20 at most.")
    max_count: int = Field(description="The largest batch one may start.")


class BatchStarted(Shape):
    batch_id: str
    count: int
    href: str


class BatchProgress(Shape):
    batch_id: str
    total: int
    queued: int
    recorded: int
    ended_unrecorded: int
    enqueuing: bool
    done: bool
    percent: int


class ShutdownStarted(Shape):
    executor_id: str
    message: str


class ResourceRef(Shape):
    id: int
    name: str


class Holder(Shape):
    user_id: int
    name: str
    email: str
    grant_id: int
    granted_at: datetime
    ended_at: datetime | None
    ended: Literal["revoked", "expired", "active"]
    revoked_by: str | None
    request_id: int | None
    request_url: str | None
    approved_by: list[str]
    auto_approved: bool


class ResourceAccess(Shape):
    resource: ResourceRef
    at: datetime
    more: bool = Field(description="True: more people held it than are listed.")
    holders: list[Holder]


# Operations ---------------------------------------------------------------------------------

CSV = "text/csv"


@dataclass(frozen=True)
class Answer:
    description: str
    shape: Any = Error  # a Shape, list[Shape], or a JSON schema (dict) for other media types
    media_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)  # name -> description (always sent)


@dataclass(frozen=True)
class Fields:
    """Some fields of a model: the others serve only the HTML page."""

    model: type[FormModel]
    names: tuple[str, ...]


def only(model: type[FormModel], *names: str) -> Fields:
    return Fields(model, names)


PathSchema = dict[str, Any] | Callable[[Settings], dict[str, Any]]


@dataclass(frozen=True)
class Operation:
    tag: str
    answers: dict[int, Answer]
    query: type[FormModel] | Fields | None = None
    form: type[FormModel] | Fields | None = None
    path: dict[str, PathSchema] = field(default_factory=dict)
    summary: str | None = None  # where the docstring speaks of the page rather than the answer


NOT_YET = "Sent to the workflow, which has not answered yet; look again shortly."
OPERATIONS: dict[tuple[str, str], Operation] = {
    ("GET", "/healthz"): Operation("health", {200: Answer("Alive.", Liveness)}),
    ("GET", "/readyz"): Operation("health", {200: Answer("Ready.", Readiness),
                                             503: Answer("A database does not answer.", Readiness)}),
    ("GET", "/dashboard/counters"): Operation("requests", {200: Answer("The counters.", Counters)}),
    ("GET", "/requests"): Operation("requests", {200: Answer("One page of the requests.", RequestTable)},
                                    query=RequestQuery),
    ("POST", "/requests"): Operation("requests", {
        201: Answer("Recorded (or recorded before, by the same form key).", RequestCreated,
                    headers={"Location": "The request's URL."}),
        422: Answer("Refused: `fields` says which input is at fault."),
        429: Answer("Too many requests from this person.", headers={"Retry-After": "Seconds to wait."}),
        503: Answer("Accepted, not recorded yet; it shows in /my/requests shortly."),
    }, form=RequestForm, summary="Ask for access: starts the request's workflow, once per form key."),
    ("GET", "/requests/{request_id}"): Operation("requests", {200: Answer("The request.", RequestDetail)},
                                                 path={"request_id": ID_PARAMETER}),
    ("POST", "/requests/{request_id}/approve"): Operation("requests", {
        200: Answer("The approval counted.", DecisionApplied),
        409: Answer("Nothing changed (already decided, or approved by you)."),
        422: Answer("The comment is too long."),
        503: Answer(NOT_YET),
    }, form=DecisionForm, path={"request_id": ID_PARAMETER}),
    ("POST", "/requests/{request_id}/reject"): Operation("requests", {
        200: Answer("Rejected.", DecisionApplied),
        409: Answer("Nothing changed (already decided)."),
        422: Answer("A reason of 3 to 1,000 characters is required."),
        503: Answer(NOT_YET),
    }, form=RejectForm, path={"request_id": ID_PARAMETER}),
    ("POST", "/requests/{request_id}/cancel"): Operation("requests", {
        200: Answer("Cancelled.", DecisionApplied),
        409: Answer("Nothing changed (no longer pending)."),
        422: Answer("The comment is too long."),
        503: Answer(NOT_YET),
    }, form=DecisionForm, path={"request_id": ID_PARAMETER}),
    ("POST", "/grants/{grant_id}/revoke"): Operation("requests", {
        200: Answer("Revoked.", GrantRevoked),
        409: Answer("The grant has already ended."),
        422: Answer("The note is too long."),
    }, form=RevokeForm, path={"grant_id": ID_PARAMETER}),
    ("GET", "/tasks"): Operation("tasks", {200: Answer("Your tasks, and (admins) every task.", TaskList)},
                                 query=TaskListQuery),
    ("GET", "/tasks/{task_id}"): Operation("tasks", {200: Answer("The task.", TaskDetail)},
                                           path={"task_id": ID_PARAMETER}),
    **{("POST", f"/tasks/{{task_id}}/{verb}"): Operation("tasks", {
        200: Answer(done, TaskReplied),
        409: Answer(refused),
        **({422: Answer("A reason of 3 to 1,000 characters is required.")} if form is ReasonForm else
           {422: Answer("The note is too long.")}),
        503: Answer(NOT_YET),
    }, form=form, path={"task_id": ID_PARAMETER})
       for verb, done, refused, form in (
           ("done", "Done: the grant moves on.", "Not a person's task that waits, or done already.", NoteForm),
           ("cant", "Failed, with your reason.", "Not a person's task that waits, or closed already.", ReasonForm),
           ("retry", "Trying again.", "Only a failed task can be retried.", NoteForm),
           ("resolve", "Closed by hand: the grant moves on.", "Only a failed task can be resolved.", ReasonForm))},
    ("GET", "/admin/agents"): Operation("agents", {200: Answer("Every agent.", AgentList)}),
    ("POST", "/admin/agents"): Operation("agents", {
        201: Answer("Created.", AgentSaved, headers={"Location": "The agent's URL."}),
        422: Answer("Refused: `fields` says which input is at fault (a settings line that would hold a secret, "
                    "an unknown key, a name in use)."),
    }, form=AgentForm),
    ("GET", "/admin/agents/{agent_id}"): Operation("agents", {200: Answer("The agent.", AgentDetail)},
                                                   path={"agent_id": ID_PARAMETER}),
    ("POST", "/admin/agents/{agent_id}"): Operation("agents", {
        200: Answer("Saved.", AgentSaved),
        422: Answer("Refused: `fields` says which input is at fault."),
    }, form=AgentForm, path={"agent_id": ID_PARAMETER}),
    ("POST", "/admin/agents/{agent_id}/check"): Operation("agents", {
        200: Answer("What reaching the system found (also recorded as the agent's health).", AgentChecked),
    }, path={"agent_id": ID_PARAMETER}),
    ("POST", "/admin/agents/{agent_id}/drift"): Operation("agents", {
        200: Answer("What the check found and corrected.", DriftChecked),
        409: Answer("This kind of agent cannot list members."),
    }, path={"agent_id": ID_PARAMETER}),
    ("GET", "/my/requests"): Operation("requests", {200: Answer("Newest first.", RequestRows)}),
    ("GET", "/my/access"): Operation("requests", {200: Answer("Grants in force, by resource.", list[Holding])}),
    ("GET", "/approvals"): Operation("requests", {200: Answer("Oldest first.", RequestRows)}),
    ("POST", "/approvals"): Operation("requests", {
        200: Answer("What happened to each request (a refusal or a late answer changes only that one).",
                    BulkDecided),
        422: Answer("No request chosen, too many, or a rejection without a reason."),
    }, form=BulkDecisionForm, summary="Approve or reject several requests at once, each as if on its own."),
    ("GET", "/approvals/count"): Operation("requests", {200: Answer("How many wait for you.", Waiting)}),
    ("GET", "/account"): Operation("account", {200: Answer("Who you are and your settings.", AccountSettings)}),
    ("POST", "/account"): Operation("account", {
        200: Answer("Saved.", SettingsSaved),
        422: Answer("Not a time zone this server knows."),
    }, form=SettingsForm, summary="Change your settings."),
    ("GET", "/admin/resources/{resource_id}/access"): Operation("requests", {
        200: Answer("Who held the resource then.", ResourceAccess),
        400: Answer("`at` is not a time."),
    }, query=AccessAtQuery, path={"resource_id": ID_PARAMETER}),
    ("GET", "/errors"): Operation("logs", {200: Answer("One page of the error log.", ErrorLog)}, query=ErrorQuery),
    ("GET", "/audit"): Operation("logs", {200: Answer("One page of the audit log.", AuditLog)}, query=AuditQuery),
    ("GET", "/audit.csv"): Operation("logs", {
        200: Answer("Every matching event, oldest first.", {"type": "string"}, media_type=CSV),
    }, query=only(AuditQuery, "actor", "action", "subject", "since", "until")),
    ("GET", "/ops/workflows"): Operation("workflows", {200: Answer("One page of workflows.", WorkflowList)},
                                         query=WorkflowQuery),
    ("GET", "/ops/workflows/{workflow_id}"): Operation("workflows", {
        200: Answer("The workflow, its steps and relatives.", WorkflowAnswer),
    }, path={"workflow_id": {"type": "string", "minLength": 1}},
        summary="One workflow: its input, output, steps, parent, children and forks."),
    **{("POST", f"/ops/workflows/{{workflow_id}}/{verb}"): Operation("workflows", {
        200: Answer(done, WorkflowActed),
        409: Answer(refused),
        422: Answer("A reason of 3 to 500 characters is required."),
    }, form=only(ActionForm, *fields), path={"workflow_id": {"type": "string", "minLength": 1}})
       for verb, done, refused, fields in (
           ("cancel", "Cancelled.", "The workflow has already ended.", ("reason",)),
           ("resume", "Resumed.", "The workflow succeeded, failed or still runs.", ("reason",)),
           ("fork", "Forked: `forked_to` is the new workflow.", "It still runs, or there is no such step.",
            ("reason", "step")))},
    ("GET", "/ops/queues"): Operation("runtime", {200: Answer("Every registered queue.", Queues)}),
    ("GET", "/ops/schedules"): Operation("runtime", {200: Answer("Every schedule.", Schedules)},
                                         query=only(ScheduleQuery, "status")),
    **{("POST", f"/ops/schedules/{{schedule}}/{verb}"): Operation("runtime", {
        200: Answer(done, ScheduleActed),
        **({409: Answer(f"The schedule is already {already}.")} if already else {}),
    }, path={"schedule": {"type": "string", "minLength": 1, "maxLength": 200}})
       for verb, done, already in (("pause", "Paused.", "paused"), ("resume", "Resumed.", "active"),
                                   ("trigger", "A run started: `workflow_id`.", None))},
    ("GET", "/ops/executors"): Operation("runtime", {200: Answer("The processes on this database.", Executors)},
                                         query=ExecutorQuery),
    ("POST", "/ops/executors/{executor_id}/adopt"): Operation("runtime", {
        200: Answer("Its pending workflows were handed to the live executors (one runs each).", ExecutorAdopted),
        409: Answer("The executor is alive, or is this process's own."),
    }, path={"executor_id": {"type": "string", "minLength": 1, "maxLength": 200}}),
    ("GET", "/ops/batches"): Operation("batches", {200: Answer("The latest batches.", Batches)}),
    ("GET", "/ops/batches/{batch_id}"): Operation("batches", {200: Answer("Where the batch stands.", BatchProgress)},
                                                  path={"batch_id": {"type": "string", "minLength": 1}},
                                                  summary="One batch's progress."),
    ("POST", "/ops/submit"): Operation("batches", {
        202: Answer("Started.", BatchStarted, headers={"Location": "The batch's URL."}),
        409: Answer("Nobody in that set can take a request for it, or the set is too large."),
        422: Answer("Refused: `fields` says which input is at fault."),
    }, form=SubmitForm),
    ("POST", "/ops/batch/{count}"): Operation("batches", {
        202: Answer("Started.", BatchStarted, headers={"Location": "The batch's URL."}),
        409: Answer("Fewer person and resource pairs can take a request than asked for."),
        422: Answer("`count` is out of range, or the reason too long."),
    }, form=LoadForm, path={"count": lambda settings: {"type": "integer", "minimum": 1,
                                                        "maximum": settings.batch_max_count}}),
    ("POST", "/ops/shutdown"): Operation("batches", {
        202: Answer("Stopping: this process exits after the answer; its manager restarts it.", ShutdownStarted),
        409: Answer("This process was not started by `webapp serve`."),
        422: Answer("A reason of 3 to 500 characters is required."),
    }, form=ShutdownForm),
}
TAGS = {
    "requests": "Access requests: ask, follow, decide, revoke; who held a resource when.",
    "agents": "Agents: connections to the systems where grants take effect; health, connection test, drift (admins).",
    "tasks": "Fulfilment tasks: the changes agents and people make in target systems; done, retry, resolve.",
    "logs": "The error log and the audit log (admins).",
    "workflows": "DBOS workflows: list, inspect, cancel, resume, fork (admins).",
    "runtime": "Queues, schedules and executors (admins).",
    "batches": "Operator batches and the graceful shutdown (admins).",
    "account": "Your own settings.",
    "health": "Probes for load balancers and process managers.",
}


# Building the spec --------------------------------------------------------------------------

def _strip_titles(schema: Any) -> Any:
    """Pydantic's generated titles ("Resource Id") say nothing the name does not."""
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    cleaned = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in ("properties", "$defs"):
            cleaned[key] = {name: _strip_titles(sub) for name, sub in value.items()}
        else:
            cleaned[key] = _strip_titles(value)
    return cleaned


def _inline(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, list):
        return [_inline(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _inline({**defs[schema["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in schema.items() if k != "$ref"}},
                       defs)
    return {key: _inline(value, defs) for key, value in schema.items() if key != "$defs"}


def _absent_not_null(schema: dict[str, Any]) -> dict[str, Any]:
    """An optional form or query field is left out, never sent as null: `X | None` is X."""
    alternatives = schema.get("anyOf")
    if alternatives and {"type": "null"} in alternatives:
        rest = [a for a in alternatives if a != {"type": "null"}]
        schema = {**{k: v for k, v in schema.items() if k != "anyOf"},
                  **(rest[0] if len(rest) == 1 else {"anyOf": rest})}
    if schema.get("default", ...) is None:
        schema = {k: v for k, v in schema.items() if k != "default"}
    return schema


def input_fields(source: type[FormModel] | Fields) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """(field name -> JSON schema, required names) of a form or query model, self-contained."""
    model, names = (source.model, source.names) if isinstance(source, Fields) else (source, None)
    schema = _strip_titles(model.model_json_schema(mode="validation"))
    properties = {name: _absent_not_null(_inline(sub, schema.get("$defs", {})))
                  for name, sub in schema.get("properties", {}).items() if names is None or name in names}
    required = [name for name in schema.get("required", []) if name in properties]
    return properties, required


def _docstring(func: Callable[..., Any]) -> tuple[str, str]:
    """(summary, description): the first paragraph, then the rest, each on one line."""
    paragraphs = [" ".join(p.split()) for p in inspect.cleandoc(func.__doc__ or "").split("\n\n") if p.strip()]
    return (paragraphs[0] if paragraphs else ""), "\n\n".join(paragraphs[1:])


def _shapes(answers: Iterable[Answer]) -> Iterable[type[BaseModel]]:
    for answer in answers:
        shape = get_args(answer.shape)[0] if get_origin(answer.shape) is list else answer.shape
        if isinstance(shape, type) and issubclass(shape, BaseModel):
            yield shape


def _content_schema(shape: Any, refs: dict[type[BaseModel], dict[str, Any]]) -> dict[str, Any]:
    if get_origin(shape) is list:
        return {"type": "array", "items": refs[get_args(shape)[0]]}
    return refs[shape] if isinstance(shape, type) else shape


class ApiSchemaGenerator(BaseSchemaGenerator):
    """Starlette's walk over the routes, with each operation's details from OPERATIONS."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def standard_answers(self, method: str, access: Access, op: Operation) -> dict[int, Answer]:
        answers: dict[int, Answer] = {}
        if method == "POST":
            answers[400] = Answer("The form could not be read.")
        if access is not Access.public:
            answers[401] = Answer("Not signed in, or the token is unknown, expired or revoked.",
                                  headers={"WWW-Authenticate": "How to authenticate."})
        if access not in (Access.public, Access.member) or method == "POST":
            answers[403] = Answer("The caller's role (or the token's scopes) does not allow this, or (cookie "
                                  "sessions) the CSRF token is missing; or a rule about this object refuses it.")
        if op.path:
            answers[404] = Answer("No such object.")
        if op.form is not None:
            answers[422] = Answer("Invalid input: `fields` says which.")
        return answers

    def get_schema(self, routes: list[BaseRoute]) -> dict[str, Any]:
        every_shape = {Error, *(shape for op in OPERATIONS.values() for shape in _shapes(op.answers.values()))}
        refs_by_key, definitions = models_json_schema(
            [(shape, "serialization") for shape in sorted(every_shape, key=lambda s: s.__name__)], ref_template=REF)
        refs = {shape: ref for (shape, _mode), ref in refs_by_key.items()}
        paths: dict[str, dict[str, Any]] = {}
        found = set()
        for endpoint in self.get_endpoints(routes):
            method = endpoint.http_method.upper()
            op = OPERATIONS.get((method, endpoint.path))
            if op is None:
                continue
            found.add((method, endpoint.path))
            paths.setdefault(endpoint.path, {})[endpoint.http_method] = self._operation(method, endpoint, op, refs)
        missing = set(OPERATIONS) - found
        if missing:
            raise LookupError(f"OPERATIONS names routes the app does not have: {sorted(missing)}")
        return {
            "openapi": OPENAPI_VERSION,
            "info": {"title": "Gatehouse", "version": self.settings.app_version, "description": DESCRIPTION},
            "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
            "paths": paths,
            "components": {
                "schemas": _strip_titles(definitions.get("$defs", {})),
                "securitySchemes": {
                    "bearerAuth": {"type": "http", "scheme": "bearer",
                                   "description": "A personal API token, issued at /account/tokens."},
                    "cookieAuth": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                                   "description": "A browser session (POSTs also need the CSRF token)."},
                },
            },
        }

    def _operation(self, method: str, endpoint: Any, op: Operation, refs: dict[type[Shape], Any]) -> dict[str, Any]:
        access: Access = endpoint.func.access
        summary, description = _docstring(endpoint.func)
        summary = op.summary or summary
        parameters = [{"name": name, "in": "path", "required": True,
                       "schema": schema(self.settings) if callable(schema) else schema}
                      for name, schema in op.path.items()]
        if op.query is not None:
            properties, required = input_fields(op.query)
            parameters += [{"name": name, "in": "query", "required": name in required, "schema": schema,
                            **({"description": schema["description"]} if "description" in schema else {})}
                           for name, schema in properties.items()]
        answers = {**self.standard_answers(method, access, op), **op.answers}
        operation: dict[str, Any] = {
            "operationId": endpoint.func.__name__,
            "summary": summary,
            **({"description": description} if description else {}),
            "tags": [op.tag],
            "x-access": access.value,
            "security": [] if access is Access.public else SECURITY,
            "parameters": parameters,
            "responses": {str(status): self._response(answers[status], refs) for status in sorted(answers)},
        }
        if op.form is not None:
            properties, required = input_fields(op.form)
            operation["requestBody"] = {"required": bool(required), "content": {FORM_MEDIA_TYPE: {"schema": {
                "type": "object", "properties": properties, **({"required": required} if required else {})}}}}
        return operation

    def _response(self, answer: Answer, refs: dict[type[Shape], Any]) -> dict[str, Any]:
        response: dict[str, Any] = {
            "description": answer.description,
            "content": {answer.media_type: {"schema": _content_schema(answer.shape, refs)}},
        }
        if answer.headers:
            response["headers"] = {name: {"description": text, "required": True, "schema": {"type": "string"}}
                                   for name, text in answer.headers.items()}
        return response


def openapi_spec(routes: list[BaseRoute], settings: Settings) -> dict[str, Any]:
    return ApiSchemaGenerator(settings).get_schema(routes)
