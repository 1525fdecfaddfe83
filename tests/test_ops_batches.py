"""/ops/submit, /ops/batch/{count} and /ops/shutdown: operator batches through the
rate-limited requests queue, and a graceful stop of a real server process."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_resource
from support.waiting import wait_for
from support.web import post_form, sign_in
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AccessRequest, AuditEvent, User
from webapp.services.accounts import create_user

JSON = {"Accept": "application/json"}


def requests_of(database: Database, resource_id: int | None = None) -> list[tuple[str, str, str]]:
    with database.session() as session:
        query = sa.select(User.email, AccessRequest.reason, AccessRequest.workflow_id).join(
            User, User.id == AccessRequest.requester_id)
        if resource_id is not None:
            query = query.where(AccessRequest.resource_id == resource_id)
        return [tuple(row) for row in session.execute(query.order_by(User.email))]  # type: ignore[misc]


def audit_actions(database: Database, action: str) -> list[dict[str, Any]]:
    with database.session() as session:
        return [e.details for e in session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action))]


def settled(client: TestClient, href: str, timeout: float = 30) -> dict[str, Any]:
    return wait_for(lambda: (p := client.get(href, headers=JSON).json())["done"] and p,  # type: ignore[no-any-return]
                    timeout=timeout, what=f"{href} to finish")


def test_submit_for_a_department_skips_those_with_a_pending_request(client: TestClient, database: Database,
                                                                     people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people)
    with database.session() as session:
        for n in range(3):
            create_user(session, email=f"sales{n}@example.com", name=f"Sal {n}", password=None, department="Sales")
    with database.session() as session:
        sales0 = session.scalar(sa.select(User.id).where(User.email == "sales0@example.com"))
        session.add(AccessRequest(requester_id=sales0, resource_id=resource_id, reason="already asked",  # type: ignore[arg-type]
                                  status="requested", workflow_id="by-hand"))
    sign_in(client, "admin@example.com")
    page = client.get("/ops/batches")
    assert page.status_code == 200 and '<option value="Sales">Sales</option>' in page.text

    started = post_form(client, "/ops/submit", {"resource_id": resource_id, "department": "Sales", "duration": "8h",
                                                "reason": "quarterly onboarding"})
    assert started.status_code == 303 and started.headers["location"].startswith("/ops/batches/batch-")
    progress = settled(client, started.headers["location"])
    assert (progress["total"], progress["recorded"], progress["ended_unrecorded"]) == (2, 2, 0)
    made = [r for r in requests_of(database, resource_id) if r[2] != "by-hand"]
    assert [email for email, _, _ in made] == ["sales1@example.com", "sales2@example.com"]
    assert all(reason == "quarterly onboarding (submitted by admin@example.com)" for _, reason, _ in made)
    assert audit_actions(database, "ops.batch_started") == [
        {"kind": "people", "count": 2, "resource_id": resource_id, "department": "Sales"}]
    html = client.get(started.headers["location"]).text
    assert "every 1s" not in html, "a finished batch stops polling"


def test_load_batch_goes_through_the_requests_queue(client: TestClient, database: Database,
                                                    people: dict[str, Any]) -> None:
    for name in ("wiki", "vpn"):
        make_resource(database, people, name)
    sign_in(client, "admin@example.com")
    csrf = {"X-CSRF-Token": client.cookies["gh_csrf"]}

    too_many = client.post("/ops/batch/9", headers={**JSON, **csrf})  # 4 active people x 2 resources
    assert too_many.status_code == 409 and "Only 8 person and resource pairs" in too_many.json()["error"]
    assert client.post("/ops/batch/0", headers={**JSON, **csrf}).status_code == 422
    assert requests_of(database) == [] and audit_actions(database, "ops.batch_started") == []

    fragment = client.post("/ops/batch/6", headers={"HX-Request": "true", **csrf})
    assert fragment.status_code == 202 and 'hx-trigger="every 1s"' in fragment.text
    batch_id = fragment.text.split('id="batch-', 1)[1].split('"', 1)[0]
    progress = settled(client, f"/ops/batches/{batch_id}")
    assert (progress["total"], progress["recorded"]) == (6, 6)
    members = client.get(f"/ops/workflows?prefix={batch_id}-", headers=JSON).json()["workflows"]
    starters = [w for w in members if w["id"].endswith(".start")]
    assert len(starters) == 6 and {w["queue"] for w in starters} == {"requests"}, "the queue paces the starts"
    assert {(w["name"], w["queue"]) for w in members if w not in starters} == {("access_request_workflow", None)}
    assert len({(email, wid) for email, _, wid in requests_of(database)}) == 6
    assert client.post("/ops/batch/3", headers={**JSON, **csrf}).status_code == 409, "only 2 pairs are left"


@pytest.mark.slow  # a load test: 200 request workflows
def test_a_batch_larger_than_the_queue_finishes(client: TestClient, database: Database, settings: Settings,
                                               people: dict[str, Any]) -> None:
    """The requests queue paces the start of requests only: a request waiting days for its
    decisions must not hold a slot, or a batch beyond the queue's concurrency never ends."""
    assert (settings.batch_concurrency, settings.batch_rate_limit) == (8, 50)  # the defaults
    for n in range(50):
        make_resource(database, people, f"app-{n:02d}")
    sign_in(client, "admin@example.com")
    started = client.post("/ops/batch/200", headers={**JSON, "X-CSRF-Token": client.cookies["gh_csrf"]})
    assert started.status_code == 202
    progress = settled(client, started.json()["href"], timeout=120)
    assert (progress["total"], progress["recorded"], progress["queued"], progress["ended_unrecorded"]) == (200, 200, 0, 0)
    requests_queue = next(q for q in client.get("/ops/queues", headers=JSON).json()["queues"] if q["name"] == "requests")
    assert (requests_queue["waiting"], requests_queue["running"]) == (0, {}), "no request holds a queue slot"
    waiting = client.get(f"/ops/workflows?prefix={progress['batch_id']}-&status=PENDING", headers=JSON).json()
    assert len(waiting["workflows"]) == 50 and waiting["next"], "every request's workflow waits for decisions"


def test_refused_input_starts_nothing(client: TestClient, database: Database, people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people)
    sign_in(client, "admin@example.com")
    no_reason = post_form(client, "/ops/submit", {"resource_id": resource_id, "reason": " "})
    assert no_reason.status_code == 422 and 'id="reason-error"' in no_reason.text
    wrong = post_form(client, "/ops/submit", {"resource_id": 999, "reason": "for everyone"})
    assert wrong.status_code == 409 and "Choose a resource" in wrong.text
    assert client.get("/ops/batches/batch-000000000000", headers=JSON).status_code == 404
    assert requests_of(database) == [] and audit_actions(database, "ops.batch_started") == []
    not_served = post_form(client, "/ops/shutdown", {"reason": "restart please"})
    assert not_served.status_code == 409 and "not started by" in not_served.text
