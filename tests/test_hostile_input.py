"""Random and hostile values at every form and query parameter: never a 500, never a
change in the database unless the input was valid, and always escaped on the way out."""

from __future__ import annotations

import hashlib
import re
import time
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import SQLModel
from starlette.routing import Route
from starlette.testclient import TestClient

from support.web import TEST_SECRET, concrete, csrf_token, personal_token, sign_in
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    Agent,
    FulfilmentTask,
    Grant,
    ImportJob,
    Resource,
    ResourceApprover,
    User,
    utcnow,
)
from webapp.services.decision_links import link_token

MARKER = "<x-gh-probe>"
# Every state-changing route and the fields its form reads. None: nothing to fuzz (it takes no input).
AGENT_FIELDS = ["name", "kind", "settings", "concurrency", "rate_limit", "rate_period_seconds", "drift_interval_minutes"]
FORMS: dict[tuple[str, str], list[str] | None] = {
    ("POST", "/login"): ["email", "password", "next"],
    ("POST", "/logout"): None,
    ("POST", "/requests"): ["resource_id", "duration", "reason", "form_key"],
    ("POST", "/requests/{request_id:int}/approve"): ["comment"],
    ("POST", "/requests/{request_id:int}/reject"): ["comment"],
    ("POST", "/requests/{request_id:int}/cancel"): [],
    ("POST", "/approvals"): ["ids", "decision", "comment"],
    ("POST", "/decide/{token}"): ["comment"],  # an emailed reject link for a decided request: parsed, then a 409
    ("POST", "/account"): ["time_zone"],
    ("POST", "/account/tokens"): ["name", "scopes", "days"],
    ("POST", "/account/tokens/{token_id:int}/revoke"): [],
    ("POST", "/grants/{grant_id:int}/revoke"): ["note"],
    ("POST", "/hooks/demo"): ["action", "person"],  # unsigned: refused before anything is read
    ("POST", "/slack/actions"): ["payload"],  # the same (tests/test_slack_actions.py signs its own)
    ("POST", "/tasks/{task_id:int}/done"): ["note"],
    ("POST", "/tasks/{task_id:int}/cant"): ["note"],
    ("POST", "/tasks/{task_id:int}/retry"): [],
    ("POST", "/tasks/{task_id:int}/resolve"): ["note"],
    ("POST", "/admin/users"): ["email", "name", "department", "title", "role", "password", "service"],
    ("POST", "/admin/users/{user_id:int}/role"): ["role"],
    ("POST", "/admin/users/{user_id:int}/active"): ["active"],
    ("POST", "/admin/users/{user_id:int}/tokens"): ["name", "scopes", "days"],
    ("POST", "/admin/users/{user_id:int}/tokens/{token_id:int}/revoke"): [],
    ("POST", "/admin/resources"): ["name", "kind", "description", "approvals_required", "max_duration",
                                   "pending_ttl_hours", "auto_approve", "approvers", "agent_id", "target",
                                   "drift_policy"],
    ("POST", "/admin/resources/{resource_id:int}"): ["name", "kind", "description", "approvals_required",
                                                     "max_duration", "pending_ttl_hours", "auto_approve", "approvers"],
    ("POST", "/admin/agents"): AGENT_FIELDS,
    ("POST", "/admin/agents/{agent_id:int}"): AGENT_FIELDS,
    ("POST", "/admin/agents/{agent_id:int}/check"): [],
    ("POST", "/admin/agents/{agent_id:int}/drift"): [],  # the fuzz agent is manual: a 409 that changes nothing
    ("POST", "/admin/import"): ["source", "count", "seed", "chunk_size", "nat", "create_users", "form_key"],
    ("POST", "/admin/import/{job_id:int}/cancel"): [],
    ("POST", "/admin/import/{job_id:int}/resume"): [],
    ("POST", "/admin/import/{job_id:int}/retry"): ["chunk"],
    ("POST", "/ops/workflows/{workflow_id:path}/cancel"): ["reason"],
    ("POST", "/ops/executors/{executor_id:path}/adopt"): [],
    ("POST", "/ops/workflows/{workflow_id:path}/resume"): ["reason"],
    ("POST", "/ops/workflows/{workflow_id:path}/fork"): ["reason", "step"],
    # A batch that starts goes on writing after the response, which the before/after snapshot
    # cannot tell from a refused one: these never name a resource or a count that could start.
    ("POST", "/ops/submit"): ["department", "duration", "reason"],
    ("POST", "/ops/batch/{count:int}"): ["reason"],
    ("POST", "/ops/shutdown"): ["reason"],
    ("POST", "/ops/schedules/{schedule}/pause"): [],  # after the first: a 409 that changes nothing
    ("POST", "/ops/schedules/{schedule}/resume"): [],
    ("POST", "/ops/schedules/{schedule}/trigger"): [],
}
QUERIES: dict[str, list[str]] = {
    "/": ["fragment"],
    "/requests/new": ["resource_id"],
    "/requests": ["sort", "order", "status", "resource", "requester", "q", "page", "fragment"],
    "/notifications": ["channel", "status"],
    "/login": ["next", "signed_out"],
    "/login/oidc": ["next"],
    "/auth/callback": ["code", "state", "error"],
    "/admin/users": ["q", "page"],
    "/tasks": ["status", "page"],
    "/admin/agents": ["fragment"],
    "/admin/agents/{agent_id:int}": ["fragment"],
    "/admin/import": ["status"],
    "/errors": ["source", "before"],
    "/ops/workflows": ["status", "name", "queue", "prefix", "request", "job", "since", "until", "page"],
    "/ops/queues": ["fragment"],
    "/ops/schedules": ["status", "started", "fragment"],
    "/ops/executors": ["state", "fragment"],
    "/ops/workflows/{workflow_id:path}": ["confirm", "step", "fragment"],
    "/audit": ["actor", "action", "subject", "since", "until", "before"],
    "/audit.csv": ["actor", "action", "subject", "since", "until"],
    "/admin/resources/{resource_id:int}/access": ["at"],
}

hostile_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"]), max_size=40),
    st.sampled_from([
        "", " ", "0", "-1", "1", "2", "7d", "admin", "member", "true", "false", "on",
        "99999999999999999999999", "-2147483649", "1e309", "NaN", "Infinity", "0x10", "３", "²", "١٢",
        "' OR 1=1 --", "'; DROP TABLE users; --", "\" onmouseover=\"alert(1)", MARKER,
        f"<script>{MARKER}</script>", "\x00", "a\x00b", "../../etc/passwd", "//evil.example",
        "é" * 300, "𝔊" * 70, "A" * 5000, "\u202e\u0000\ufeff", "%00", "{{7*7}}", "${jndi:x}",
    ]),
)
field_values = st.one_of(hostile_text, st.lists(hostile_text, min_size=2, max_size=3))


def snapshot(database: Database) -> dict[str, str]:
    """A digest of every app table's rows, minus the bookkeeping a request may always write."""
    skip = {"login_attempts", "user_sessions", "executor_heartbeat"}  # the heartbeat rewrites its row on a timer
    digests = {}
    with database.session() as session:
        for table in SQLModel.metadata.sorted_tables:
            if table.name in skip:
                continue
            query = sa.select(table)
            if table.name == "audit_events":
                query = query.where(~table.c.action.like("auth.%"))
            if table.name == "api_tokens":
                query = sa.select(table.c.id, table.c.revoked_at)
            rows = session.execute(query.order_by(*table.primary_key.columns)).all()
            digests[table.name] = hashlib.sha256(repr(rows).encode()).hexdigest()
    return digests


def test_every_state_changing_route_is_fuzzed(app) -> None:  # type: ignore[no-untyped-def]
    writes = {(m, r.path) for r in app.routes if isinstance(r, Route) for m in (r.methods or ()) if m not in ("GET", "HEAD")}
    assert writes == set(FORMS)


@pytest.fixture
def admin_client(client: TestClient, people, database: Database) -> tuple[TestClient, dict[str, int]]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        resource = Resource(name="fuzz-target")
        session.add(resource)
        session.flush()
        session.add(ResourceApprover(resource_id=resource.id, user_id=people["approver"].id))
        token, _ = personal_token(session, session.get(User, people["member"].id), name="t")
        request = AccessRequest(requester_id=people["member"].id, resource_id=resource.id, reason="fuzz reason",
                                workflow_id="fuzz-request", status="approved")
        session.add(request)
        session.flush()
        grant = Grant(request_id=request.id, user_id=people["member"].id, resource_id=resource.id, revoked_at=utcnow())
        session.add(grant)
        job = ImportJob(source="fuzz.json", source_kind="file", count=1, seed="fuzz", chunk_size=1, page_size=1,
                        status="finished", workflow_id="fuzz-import")
        session.add(job)
        agent = Agent(name="fuzz-desk", kind="manual", settings={})
        session.add(agent)
        session.flush()
        # A finished task: every action is parsed, then refused with a 409 that changes nothing.
        task = FulfilmentTask(grant_id=grant.id, action="add", agent_id=agent.id, resource_id=resource.id,
                              user_id=people["member"].id, target="", status="done", workflow_id="fuzz-task")
        session.add(task)
        session.flush()
        ids = {"task_id": task.id, "agent_id": agent.id, "user_id": people["member"].id, "token_id": token.id, "resource_id": resource.id,
               "request_id": request.id, "grant_id": grant.id, "job_id": job.id,
               "workflow_id": "fuzz-request",  # not a DBOS workflow: forms are parsed, then a 404
               "schedule": "sweep", "executor_id": "gone-executor", "count": 100_000,
               "token": link_token(TEST_SECRET, request.id, "admin@example.com", "reject", time.time() + 3600)}
    sign_in(client, "admin@example.com")
    return client, ids  # type: ignore[return-value]


def check_escaped(text: str) -> None:
    assert MARKER not in text, "a submitted value came back unescaped"


FUZZED = [key for key, fields in FORMS.items() if fields is not None]
# DBOS's background threads (queue pollers, workflows of earlier examples) use the global
# `random` module while Hypothesis draws; Hypothesis reads that as a strategy using `random`
# and fails the replay as flaky. Our strategies do not use it.
background_random = pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")


@background_random
@pytest.mark.parametrize(("method", "path"), FUZZED)
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_forms_survive_hostile_input(admin_client, database: Database, method: str, path: str, data) -> None:  # type: ignore[no-untyped-def]
    client, ids = admin_client
    fields = FORMS[(method, path)] or []
    form = {name: data.draw(field_values, label=name) for name in data.draw(st.sets(st.sampled_from(fields)) if fields else st.just(set()))}
    before = snapshot(database)
    response = client.request(method, concrete(path, ids), data={**form, "csrf_token": csrf_token(client)},
                              follow_redirects=False)
    assert response.status_code < 500, response.text[:500]
    check_escaped(response.text)
    if response.status_code >= 400:
        assert snapshot(database) == before, f"{response.status_code} but the database changed"
    if path == "/login" and response.status_code == 303:
        sign_in(client, "admin@example.com")  # a valid fuzzed sign-in switched users; switch back
    assert not response.headers.get("location", "").startswith("/login"), "the admin was signed out"


@background_random
@pytest.mark.parametrize("path", sorted(QUERIES))
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_query_parameters_survive_hostile_input(admin_client, database: Database, path: str, data) -> None:  # type: ignore[no-untyped-def]
    client, ids = admin_client
    params = {name: data.draw(hostile_text, label=name) for name in QUERIES[path]}
    before = snapshot(database)
    for headers in ({}, {"HX-Request": "true"}, {"Accept": "application/json"}):
        response = client.get(concrete(path, ids), params=params, headers=headers, follow_redirects=False)
        assert response.status_code < 500, response.text[:500]
        check_escaped(response.text)
        assert not response.headers.get("location", "").startswith("/login?"), "the admin was signed out"
        if "location" in response.headers:
            assert re.match(r"^/(?!/)", response.headers["location"]), response.headers["location"]
    assert snapshot(database) == before


# Headers and cookies: what a browser or a script can put there, as raw UTF-8 bytes.
HEADERS = ("x-csrf-token", "last-event-id", "authorization", "x-request-id", "hx-request", "accept", "origin")
COOKIES = ("gh_csrf", "gh_session")
# A page, a fragment, the event stream, a write, and the sign-in form before signing in.
ENDPOINTS = [("GET", "/"), ("GET", "/requests"), ("GET", "/events"), ("GET", "/events?last_event_id={value}"),
             ("POST", "/requests/{request_id:int}/approve"), ("GET", "/login"), ("POST", "/login")]
unicode_text = st.one_of(
    st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=30),
    st.sampled_from(["²", "\xe9.x", "١٢", "𝟙𝟚", "0\u0663", "é" * 200, "Bearer ²", "Bearer gh_é", "1" * 30]),
)


@background_random
@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_headers_and_cookies_survive_arbitrary_unicode(admin_client, method: str, path: str, data) -> None:  # type: ignore[no-untyped-def]
    """Every header and cookie the app reads, and the stream's resume id, with any Unicode:
    an answer a browser can act on (2xx-4xx), never a 500."""
    client, ids = admin_client
    value = data.draw(unicode_text, label="value")
    headers = {name: data.draw(unicode_text, label=name).encode() for name in data.draw(st.sets(st.sampled_from(HEADERS)))}
    jar = {name: data.draw(unicode_text, label=name) for name in data.draw(st.sets(st.sampled_from(COOKIES)))}
    cookies = {**client.cookies, **jar}
    headers[b"cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()
    url = concrete(path.replace("{value}", quote(value)), ids)
    bare = TestClient(client.app)  # cookies only from the header above
    with bare.stream(method, url, headers=headers, data={"csrf_token": value} if method == "POST" else None,
                     follow_redirects=False) as response:
        assert response.status_code < 500, (url, headers, response.read()[:300])


def test_digits_and_tokens_outside_ascii_are_refused_not_crashed(admin_client) -> None:  # type: ignore[no-untyped-def]
    """The review's cases: "²".isdigit() is true but int("²") fails; a non-ASCII CSRF cookie
    made hmac.compare_digest raise on every route."""
    client, ids = admin_client
    form = {"name": "new-app", "approvals_required": "1", "max_duration": "permanent", "pending_ttl_hours": "72",
            "approvers": "²", "csrf_token": csrf_token(client)}
    assert client.post("/admin/resources", data=form, follow_redirects=False).status_code == 422
    with client.stream("GET", "/events?last_event_id=%C2%B2") as stream:
        assert stream.status_code == 200
    with client.stream("GET", "/events", headers={"Last-Event-ID": "١٢".encode()}) as stream:
        assert stream.status_code == 200
    browser = TestClient(client.app)
    page = browser.get("/login", headers={"cookie": "gh_csrf=\xe9.x".encode()})
    assert page.status_code == 200 and "gh_csrf=" in page.headers["set-cookie"], "a fresh token replaces it"
    refused = browser.post("/login", data={"email": "a@example.com", "password": "x", "csrf_token": "é.x"},
                           headers={"cookie": "gh_csrf=\xe9.x".encode()})
    assert refused.status_code == 403
