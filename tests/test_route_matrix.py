"""Every route x every role (and signed out): the status each must get.

Adding a route without adding it to ROUTES fails `test_every_route_is_in_the_table`,
so no route can ship without a decision about who may call it.
"""

from __future__ import annotations

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from support.web import as_role, concrete, personal_token
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Grant, ImportJob, Resource, ResourceApprover, User
from webapp.web.csrf import CSRF_COOKIE
from webapp.web.security import Access

# (method, path template) -> who may call it
ROUTES: dict[tuple[str, str], Access] = {
    ("GET", "/healthz"): Access.public,
    ("GET", "/readyz"): Access.public,
    ("GET", "/login"): Access.public,
    ("POST", "/login"): Access.public,
    ("GET", "/login/oidc"): Access.public,  # not set up here: a 404 for everyone
    ("GET", "/auth/callback"): Access.public,
    ("POST", "/logout"): Access.member,
    ("GET", "/"): Access.member,
    ("GET", "/dashboard/counters"): Access.member,
    ("GET", "/requests"): Access.member,
    ("GET", "/requests/new"): Access.member,
    ("POST", "/requests"): Access.member,
    ("GET", "/requests/{request_id:int}"): Access.member,
    ("POST", "/requests/{request_id:int}/approve"): Access.approver,
    ("POST", "/requests/{request_id:int}/reject"): Access.approver,
    ("POST", "/requests/{request_id:int}/cancel"): Access.member,
    ("POST", "/grants/{grant_id:int}/revoke"): Access.admin,
    ("GET", "/events"): Access.member,
    ("GET", "/decide/{token}"): Access.member,  # not a valid link: a 404 for everyone signed in
    ("POST", "/decide/{token}"): Access.member,
    ("GET", "/my/requests"): Access.member,
    ("GET", "/my/access"): Access.member,
    ("GET", "/account/tokens"): Access.member,
    ("POST", "/account/tokens"): Access.member,
    ("POST", "/account/tokens/{token_id:int}/revoke"): Access.member,
    ("GET", "/approvals"): Access.approver,
    ("POST", "/approvals"): Access.approver,
    ("GET", "/approvals/count"): Access.approver,
    ("GET", "/account"): Access.member,
    ("POST", "/account"): Access.member,
    ("POST", "/hooks/demo"): Access.public,
    ("POST", "/slack/actions"): Access.public,  # signed by Slack or refused (not set up here: a 404)  # unsigned: a 403 from the receiver itself, for everyone
    ("GET", "/tasks"): Access.member,
    ("GET", "/tasks/{task_id:int}"): Access.member,  # no such task here: a 404 for everyone signed in
    ("POST", "/tasks/{task_id:int}/done"): Access.member,  # no such task: a 404 (assignees and admins: tests/test_fulfilment.py)
    ("POST", "/tasks/{task_id:int}/cant"): Access.member,
    ("POST", "/tasks/{task_id:int}/retry"): Access.member,
    ("POST", "/tasks/{task_id:int}/resolve"): Access.member,
    ("GET", "/notifications"): Access.admin,
    ("GET", "/admin/users"): Access.admin,
    ("POST", "/admin/users"): Access.admin,
    ("GET", "/admin/users/{user_id:int}"): Access.admin,
    ("POST", "/admin/users/{user_id:int}/role"): Access.admin,
    ("POST", "/admin/users/{user_id:int}/active"): Access.admin,
    ("POST", "/admin/users/{user_id:int}/tokens"): Access.admin,
    ("POST", "/admin/users/{user_id:int}/tokens/{token_id:int}/revoke"): Access.admin,
    ("GET", "/admin/resources"): Access.admin,
    ("POST", "/admin/resources"): Access.admin,
    ("GET", "/admin/resources/{resource_id:int}"): Access.admin,
    ("POST", "/admin/resources/{resource_id:int}"): Access.admin,
    ("GET", "/admin/resources/{resource_id:int}/access"): Access.admin,
    ("GET", "/admin/agents"): Access.admin,
    ("POST", "/admin/agents"): Access.admin,
    ("GET", "/admin/agents/{agent_id:int}"): Access.admin,
    ("POST", "/admin/agents/{agent_id:int}"): Access.admin,
    ("POST", "/admin/agents/{agent_id:int}/check"): Access.admin,
    ("POST", "/admin/agents/{agent_id:int}/drift"): Access.admin,
    ("GET", "/errors"): Access.admin,
    ("GET", "/ops/workflows"): Access.admin,
    ("GET", "/ops/queues"): Access.admin,
    ("GET", "/ops/schedules"): Access.admin,
    ("POST", "/ops/schedules/{schedule}/pause"): Access.admin,
    ("POST", "/ops/schedules/{schedule}/resume"): Access.admin,
    ("POST", "/ops/schedules/{schedule}/trigger"): Access.admin,
    ("GET", "/ops/executors"): Access.admin,
    ("POST", "/ops/executors/{executor_id:path}/adopt"): Access.admin,
    ("GET", "/ops/workflows/{workflow_id:path}"): Access.admin,  # no such workflow here: a 404 for admins
    ("POST", "/ops/workflows/{workflow_id:path}/cancel"): Access.admin,
    ("POST", "/ops/workflows/{workflow_id:path}/resume"): Access.admin,
    ("POST", "/ops/workflows/{workflow_id:path}/fork"): Access.admin,
    ("GET", "/ops/batches"): Access.admin,
    ("GET", "/ops/batches/{batch_id}"): Access.admin,  # no such batch here: a 404 for admins
    ("POST", "/ops/submit"): Access.admin,  # no resource id: a 422 for admins
    ("POST", "/ops/batch/{count:int}"): Access.admin,
    ("POST", "/ops/shutdown"): Access.admin,  # no reason given: a 422 for admins (and never a real stop here)
    ("GET", "/audit"): Access.admin,
    ("GET", "/audit.csv"): Access.admin,
    ("GET", "/admin/import"): Access.admin,
    ("POST", "/admin/import"): Access.admin,
    ("GET", "/admin/import/{job_id:int}"): Access.admin,
    ("GET", "/admin/import/{job_id:int}/events"): Access.admin,  # the sample job has finished: the stream ends
    ("POST", "/admin/import/{job_id:int}/cancel"): Access.admin,
    ("POST", "/admin/import/{job_id:int}/resume"): Access.admin,
    ("POST", "/admin/import/{job_id:int}/retry"): Access.admin,
    ("GET", "/openapi.json"): Access.public,
    ("GET", "/docs"): Access.public,
}
STREAMS = {"/events"}
RANK = {None: -1, "member": 0, "approver": 1, "admin": 2}
PUBLIC_RANK = {Access.public: -1, Access.member: 0, Access.approver: 1, Access.admin: 2}


def declared_routes(app) -> set[tuple[str, str]]:  # type: ignore[no-untyped-def]
    found = set()
    for route in app.routes:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        assert hasattr(route.endpoint, "access"), f"{route.path} is not built with guarded_route"
        for method in route.methods or ():
            if method != "HEAD":
                found.add((method, route.path))
    return found


def test_every_route_is_in_the_table(app) -> None:  # type: ignore[no-untyped-def]
    assert declared_routes(app) == set(ROUTES)


def test_the_table_matches_what_the_routes_declare(app) -> None:  # type: ignore[no-untyped-def]
    for route in app.routes:
        if isinstance(route, Route):
            for method in route.methods or ():
                if method != "HEAD":
                    assert route.endpoint.access == ROUTES[(method, route.path)], (method, route.path)


@pytest.fixture
def sample_ids(people, database: Database) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with database.session() as session:
        resource = Resource(name="matrix-db", kind="database")
        session.add(resource)
        session.flush()
        session.add(ResourceApprover(resource_id=resource.id, user_id=people["approver"].id))
        token, _secret = personal_token(session, session.get(User, people["member"].id), name="m")
        request = AccessRequest(requester_id=people["member"].id, resource_id=resource.id, reason="matrix reason",
                                workflow_id="matrix-request", status="approved")
        session.add(request)
        session.flush()
        grant = Grant(request_id=request.id, user_id=people["member"].id, resource_id=resource.id)
        session.add(grant)
        job = ImportJob(source="matrix.json", source_kind="file", count=1, seed="matrix", chunk_size=1, page_size=1,
                        status="finished", workflow_id="matrix-import")
        session.add(job)
        session.flush()
        return {"user_id": people["member"].id, "token_id": token.id, "resource_id": resource.id,  # type: ignore[dict-item]
                "request_id": request.id, "grant_id": grant.id, "job_id": job.id,
                "workflow_id": "matrix-request", "schedule": "sweep", "executor_id": "gone-executor", "batch_id": "batch-000000000000", "count": 1,
                "task_id": 424242, "agent_id": 424242, "token": "not-a-signed-link"}  # type: ignore[dict-item]


@pytest.mark.parametrize("role", [None, "member", "approver", "admin"])
def test_route_by_role(client: TestClient, database: Database, people, sample_ids, role) -> None:  # type: ignore[no-untyped-def]
    for (method, template), access in ROUTES.items():
        as_role(client, database, people, role)
        path = concrete(template, sample_ids)
        headers = {"X-CSRF-Token": client.cookies[CSRF_COOKIE]}
        if path in STREAMS:  # an endless stream: read its status line, then hang up
            with client.stream(method, path, headers=headers, follow_redirects=False) as response:
                pass
        else:
            response = client.request(method, path, headers=headers, follow_redirects=False)
        allowed = RANK[role] >= PUBLIC_RANK[access]
        where = f"{role or 'signed-out'} {method} {path}"
        if allowed:
            assert response.status_code < 500, where
            assert response.status_code != 401, where
            # 403 from a service rule (e.g. only the requester may cancel) is not the role guard's.
            assert response.status_code != 403 or "role does not allow" not in response.text, where
            assert not response.headers.get("location", "").startswith("/login?"), where
        elif role is None:
            assert response.status_code == 303, where
            assert response.headers["location"].startswith("/login?next="), where
        else:
            assert response.status_code == 403 and "role does not allow" in response.text, where


@pytest.mark.parametrize("scope", ["read", "decide", "operate"])
def test_a_token_reaches_only_what_its_scopes_allow(client: TestClient, database: Database, people, sample_ids,  # type: ignore[no-untyped-def]
                                                   scope) -> None:
    """An admin's token with one scope: every route needing another (and token management,
    which is for browsers) is refused before it runs; GETs need only `read`."""
    with database.session() as session:
        _token, secret = personal_token(session, session.get(User, people["admin"].id), scopes=[scope])
    headers = {"Authorization": f"Bearer {secret}", "Accept": "application/json"}
    browser_only = {(m, r.path) for r in client.app.routes if isinstance(r, Route)  # type: ignore[attr-defined]
                    for m in r.methods or () if getattr(r.endpoint, "browser_only", False)}
    for (method, template), access in ROUTES.items():
        path = concrete(template, sample_ids)
        if access is Access.public or path in STREAMS:
            continue
        needed = "read" if method == "GET" else "operate" if access is Access.admin else "decide"
        if (method, template) in browser_only:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 403 and "signed-in browser" in response.text, (method, template)
        elif needed != scope:
            response = client.request(method, path, headers=headers)
            assert response.status_code == 403 and f"lacks the {needed} scope" in response.text, (method, template)
        elif method == "GET":
            assert client.get(path, headers=headers).status_code in (200, 404), template  # 404: a sample id with no row


# An EventSource signed out (its session ended) gets a 401 and stops, instead of a login page it cannot read.
@pytest.mark.parametrize("headers", [{"HX-Request": "true"}, {"Accept": "application/json"},
                                     {"Accept": "text/event-stream"}])
def test_signed_out_fragments_and_api_calls_get_401(client: TestClient, sample_ids, headers) -> None:  # type: ignore[no-untyped-def]
    for (method, template), access in ROUTES.items():
        if access is Access.public:
            continue
        response = client.request(method, concrete(template, sample_ids), headers=headers, follow_redirects=False)
        assert response.status_code == 401, (method, template)
    if "HX-Request" in headers:
        assert response.headers["hx-redirect"].startswith("/login?next=")


def test_signed_out_static_files_and_probes_are_served(client: TestClient) -> None:
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/healthz").status_code == 200
    assert client.get("/login").status_code == 200
