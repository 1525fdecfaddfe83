"""/ops/queues, /ops/schedules, /ops/executors: what DBOS runs on, read back from DBOS itself."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID
from starlette.testclient import TestClient

from support.access import make_resource, submit
from support.web import post_form, sign_in
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AuditEvent, ExecutorHeartbeat, utcnow
from webapp.web.ops.runtime import next_tick
from webapp.workflows import queue_specs

JSON = {"Accept": "application/json"}
HTMX = {"HX-Request": "true"}
HEARTBEAT = 1.0  # "gone" after 3 s without a beat: room for a loaded CI machine


@DBOS.workflow()
def parked_workflow(label: str) -> str:
    """Holds its queue slot until told to go: lets a test see work wait behind it."""
    DBOS.recv("go", timeout_seconds=30)
    return label


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """One import chunk at a time per process, so a second enqueued workflow must wait."""
    return settings.model_copy(update={"import_concurrency": 1, "heartbeat_interval_seconds": HEARTBEAT})


@pytest.fixture
def admin(client: TestClient, people: dict[str, Any]) -> TestClient:
    sign_in(client, "admin@example.com")
    return client


def eventually(check: Callable[[], Any], seconds: float = 10.0) -> Any:
    """Poll `check` until it returns something truthy (DBOS's queue poller has no event to await)."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return result


def status_of(workflow_id: str) -> str:
    return DBOS.get_workflow_status(workflow_id).status  # type: ignore[union-attr]


def audit_rows(database: Database, subject: str) -> list[tuple[str, str, dict[str, Any]]]:
    with database.session() as session:
        return [tuple(row) for row in session.execute(  # type: ignore[misc]
            sa.select(AuditEvent.actor, AuditEvent.action, AuditEvent.details)
            .where(AuditEvent.subject == subject).order_by(AuditEvent.id))]


# Queues ------------------------------------------------------------------------------------

def queue(client: TestClient, name: str) -> dict[str, Any]:
    return next(q for q in client.get("/ops/queues", headers=JSON).json()["queues"] if q["name"] == name)


def test_queues_show_their_stored_limits(admin: TestClient, settings: Settings) -> None:
    listed = {q["name"]: q for q in admin.get("/ops/queues", headers=JSON).json()["queues"]}
    assert set(listed) == {spec.name for spec in queue_specs(settings)}  # every queue the app registers
    assert listed["import"]["worker_concurrency"] == 1
    assert listed["email"]["limiter"] == {"limit": settings.email_rate_limit, "period": settings.email_rate_period}
    assert listed["outbox"]["limiter"] is None
    assert listed["slack"]["polling_interval"] == settings.notify_queue_polling_interval
    assert all(q["waiting"] == 0 and q["oldest_id"] is None for q in listed.values())

    page = admin.get("/ops/queues")
    assert page.status_code == 200 and "<caption>Registered queues</caption>" in page.text
    assert '<a href="/ops/queues" aria-current="page">Queues</a>' in page.text
    fragment = admin.get("/ops/queues", headers=HTMX)
    assert fragment.text.lstrip().startswith('<section id="queues-table"')


def test_queue_depth_running_and_oldest_follow_the_work(admin: TestClient) -> None:
    ids = [f"parked-{n}" for n in range(3)]
    for workflow_id in ids:
        with SetWorkflowID(workflow_id):
            DBOS.enqueue_workflow("import", parked_workflow, workflow_id)
    eventually(lambda: status_of(ids[0]) == "PENDING")
    try:
        shown = queue(admin, "import")
        assert shown["waiting"] == 2 and shown["running"] == {"test-executor": 1}
        assert shown["oldest_id"] == ids[1]
        assert datetime.fromisoformat(shown["oldest_since"]) <= utcnow()
        assert f"<code>{ids[1]}</code>" in admin.get("/ops/queues").text

        DBOS.send(ids[0], "done", topic="go")  # the first finishes; the second takes its slot
        eventually(lambda: status_of(ids[1]) == "PENDING")
        shown = queue(admin, "import")
        assert shown["waiting"] == 1 and shown["oldest_id"] == ids[2] and shown["running"] == {"test-executor": 1}
    finally:
        for workflow_id in ids:
            DBOS.send(workflow_id, "done", topic="go")
    eventually(lambda: all(status_of(w) == "SUCCESS" for w in ids))
    shown = queue(admin, "import")
    assert shown["waiting"] == 0 and shown["running"] == {} and shown["oldest_id"] is None


# Schedules ---------------------------------------------------------------------------------

def sweep(client: TestClient) -> dict[str, Any]:
    return next(s for s in client.get("/ops/schedules", headers=JSON).json()["schedules"] if s["name"] == "sweep")


def test_schedules_list_cron_status_and_ticks(admin: TestClient, settings: Settings) -> None:
    before = utcnow()
    shown = sweep(admin)
    after = utcnow()  # the server computes the next tick somewhere between before and after
    assert shown["cron"] == f"*/{settings.sweep_interval_seconds} * * * * *"
    assert shown["status"] == "ACTIVE" and shown["workflow"].endswith("sweep_workflow")
    upcoming = datetime.fromisoformat(shown["next_tick"])
    assert before < upcoming <= after + timedelta(seconds=settings.sweep_interval_seconds)
    # The scheduler fires (and records the tick) within an interval and its jitter.
    ticked = eventually(lambda: sweep(admin)["last_tick"], seconds=3 * settings.sweep_interval_seconds)
    assert before - timedelta(seconds=1) <= datetime.fromisoformat(ticked) <= utcnow()
    assert admin.get("/ops/schedules?status=PAUSED", headers=JSON).json()["schedules"] == []
    assert 'action="/ops/schedules/sweep/pause"' in admin.get("/ops/schedules").text


def test_next_tick_reads_cron_with_or_without_seconds() -> None:
    now = datetime(2026, 1, 1, 12, 0, 7, tzinfo=UTC)
    assert next_tick("*/5 * * * * *", None, now) == datetime(2026, 1, 1, 12, 0, 10, tzinfo=UTC)
    assert next_tick("30 * * * *", None, now) == datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
    assert next_tick("0 9 * * *", "Europe/Paris", now) == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)


def test_pause_and_resume_are_audited_and_refused_when_pointless(admin: TestClient, database: Database) -> None:
    paused = post_form(admin, "/ops/schedules/sweep/pause")
    assert paused.status_code == 303 and paused.headers["location"] == "/ops/schedules"
    assert DBOS.get_schedule("sweep")["status"] == "PAUSED"  # type: ignore[index]
    assert audit_rows(database, "schedule:sweep") == [
        ("admin@example.com", "schedule.paused", {"from": "ACTIVE", "to": "PAUSED"})]
    shown = sweep(admin)
    assert shown["status"] == "PAUSED" and shown["next_tick"] is None
    assert 'action="/ops/schedules/sweep/resume"' in admin.get("/ops/schedules").text

    again = admin.post("/ops/schedules/sweep/pause", headers={**JSON, "X-CSRF-Token": admin.cookies["gh_csrf"]})
    assert again.status_code == 409 and again.json()["error"] == "The schedule “sweep” is already paused."
    assert DBOS.get_schedule("sweep")["status"] == "PAUSED"  # type: ignore[index]
    assert len(audit_rows(database, "schedule:sweep")) == 1

    resumed = post_form(admin, "/ops/schedules/sweep/resume", headers=HTMX)
    assert resumed.status_code == 200
    assert resumed.text.lstrip().startswith('<section id="schedules-table">')
    assert "Schedule “sweep” resumed." in resumed.text
    assert DBOS.get_schedule("sweep")["status"] == "ACTIVE"  # type: ignore[index]
    assert [row[1] for row in audit_rows(database, "schedule:sweep")] == ["schedule.paused", "schedule.resumed"]
    assert post_form(admin, "/ops/schedules/sweep/resume").status_code == 409


def test_trigger_starts_a_sweep_run_and_links_to_it(admin: TestClient, database: Database) -> None:
    started = admin.post("/ops/schedules/sweep/trigger", headers={**JSON, "X-CSRF-Token": admin.cookies["gh_csrf"]})
    assert started.status_code == 200
    workflow_id = started.json()["workflow_id"]
    assert workflow_id.startswith("sched-sweep-trigger-")
    handle = DBOS.retrieve_workflow(workflow_id)
    handle.get_result()
    assert handle.get_status().name.endswith("sweep_workflow") and handle.get_status().status == "SUCCESS"
    assert audit_rows(database, "schedule:sweep") == [
        ("admin@example.com", "schedule.triggered", {"workflow_id": workflow_id})]

    plain = post_form(admin, "/ops/schedules/sweep/trigger")
    assert plain.status_code == 303 and plain.headers["location"].startswith("/ops/schedules?started=sched-sweep-")
    page = admin.get(plain.headers["location"])
    second = DBOS.list_workflows(name=handle.get_status().name, sort_desc=True, limit=1)[0].workflow_id
    assert second != workflow_id and f'href="/ops/workflows/{quote(second, safe="/")}"' in page.text
    assert len(audit_rows(database, "schedule:sweep")) == 2


def test_unknown_schedule_is_404_and_changes_nothing(admin: TestClient, database: Database) -> None:
    for verb in ("pause", "resume", "trigger"):
        response = post_form(admin, f"/ops/schedules/no-such-schedule/{verb}")
        assert response.status_code == 404, verb
        assert "no schedule named" in response.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent).where(
            AuditEvent.action.like("schedule.%"))) == 0  # type: ignore[attr-defined]
    assert DBOS.get_schedule("sweep")["status"] == "ACTIVE"  # type: ignore[index]
    assert DBOS.list_workflows(workflow_id_prefix="sched-no-such") == []


# Executors ---------------------------------------------------------------------------------

def executors(client: TestClient, query: str = "") -> list[dict[str, Any]]:
    return client.get(f"/ops/executors{query}", headers=JSON).json()["executors"]  # type: ignore[no-any-return]


def test_executors_list_this_process_with_a_fresh_heartbeat(admin: TestClient, database: Database,
                                                           people: dict[str, Any]) -> None:
    request_id = submit(admin, make_resource(database, people))  # its workflow waits for a decision
    me = executors(admin)
    assert [e["executor_id"] for e in me] == ["test-executor"]
    first = me[0]
    assert first["state"] == "alive" and first["this_process"] and first["pid"] == os.getpid()
    assert first["app_version"] == "test" and first["running"] >= 1, request_id
    # The heartbeat goes on while the app runs.
    later = eventually(lambda: next((e for e in executors(admin) if e["last_seen"] > first["last_seen"]), None))
    assert utcnow() - datetime.fromisoformat(later["last_seen"]) < timedelta(seconds=3 * HEARTBEAT + 2)

    with database.session() as session:  # a process that stopped beating an hour ago
        long_ago = utcnow() - timedelta(hours=1)
        session.add(ExecutorHeartbeat(executor_id="old-host", app_version="0.0.9", hostname="elsewhere", pid=7,
                                      started_at=long_ago, last_seen=long_ago))
    states = {e["executor_id"]: e["state"] for e in executors(admin)}
    assert states == {"test-executor": "alive", "old-host": "gone"}
    assert [e["executor_id"] for e in executors(admin, "?state=gone")] == ["old-host"]
    page = admin.get("/ops/executors")
    assert page.status_code == 200 and "this process" in page.text and "elsewhere, pid 7" in page.text
    assert admin.get("/ops/executors?state=alive", headers=HTMX).text.lstrip().startswith(
        '<section id="executors-table"')


@pytest.mark.parametrize("path", ["/ops/queues", "/ops/schedules", "/ops/executors"])
def test_pages_are_for_admins(client: TestClient, people: dict[str, Any], path: str) -> None:
    sign_in(client, "approver@example.com")
    assert client.get(path).status_code == 403


def test_actions_are_for_admins(client: TestClient, people: dict[str, Any], database: Database) -> None:
    sign_in(client, "approver@example.com")
    assert post_form(client, "/ops/schedules/sweep/pause").status_code == 403
    assert DBOS.get_schedule("sweep")["status"] == "ACTIVE"  # type: ignore[index]
    assert audit_rows(database, "schedule:sweep") == []
