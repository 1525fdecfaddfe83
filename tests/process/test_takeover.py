"""Takeover (issue 12.2): two `webapp serve` processes on one PostgreSQL; one is killed for
good mid-work. Its workflows (a request waiting for a decision, a grant waiting to end) are
adopted by the other once its lease runs out, exactly once, audited; everything finishes
there and the grant ends on time. The killed executor, started again, runs none of them; a
process paused past its lease exits when it wakes instead of running its adopted work."""

from __future__ import annotations

import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOSClient, EnqueueOptions

from support.access import REASON
from support.processes import AppProcess, app_env
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AccessRequest, AuditEvent, ExecutorHeartbeat, Grant, Resource, ResourceApprover
from webapp.services.accounts import create_user
from webapp.workflows.runtime import APP_NAME

pytestmark = pytest.mark.slow
GRANT_SECONDS = 20
LEASE_SECONDS = 6
TIMING = {"HEARTBEAT_INTERVAL_SECONDS": "0.5", "EXECUTOR_LEASE_SECONDS": str(LEASE_SECONDS)}


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    with (tmp_path / "a.log").open("w") as a, (tmp_path / "b.log").open("w") as b:
        yield a, b


def api(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def actions(database: Database) -> Counter[str]:
    with database.session() as session:
        return Counter(session.scalars(sa.select(AuditEvent.action)))


def workflow_executors(client: DBOSClient, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    return {w.workflow_id: (w.status, w.executor_id) for w in client.list_workflows(workflow_ids=ids)}


def test_a_dead_executors_work_finishes_on_the_live_one(pg_settings: Settings, database: Database, logs: Any,
                                                        tmp_path: Path) -> None:
    with database.session() as session:
        member = create_user(session, email="mo@example.test", name="Mo Member", password=None, role="member")
        approver = create_user(session, email="arlo@example.test", name="Arlo", password=None, role="approver")
        admin = create_user(session, email="ria@example.test", name="Ria Root", password=None, role="admin")
        resources = []
        for name in ("orders-db", "wiki", "crm"):
            resource = Resource(name=name, kind="database")
            session.add(resource)
            session.flush()
            session.add(ResourceApprover(resource_id=resource.id, user_id=approver.id))  # type: ignore[arg-type]
            resources.append(resource.id)
        member_token = personal_token(session, member)[1]
        approver_token = personal_token(session, approver)[1]
        admin_token = personal_token(session, admin, scopes=["read", "operate"])[1]
        member_id = member.id
    log_a, log_b = logs
    a = AppProcess(app_env(pg_settings, EXECUTOR_ID="proc-a", **TIMING), log_a, cwd=tmp_path)
    b = AppProcess(app_env(pg_settings, EXECUTOR_ID="proc-b", **TIMING), log_b, cwd=tmp_path)
    client = DBOSClient(system_database_url=pg_settings.system_database_url, application_name=APP_NAME)
    try:
        b.start()
        # On B: a grant of GRANT_SECONDS (a length only a workflow's input can ask for) and a
        # request waiting for its decision.
        timed_id = f"takeover-timed-{uuid.uuid4().hex[:8]}"
        submission = {"requester_id": member_id, "resource_id": resources[0], "duration_seconds": GRANT_SECONDS,
                      "reason": REASON, "reminder": {"min_grant_seconds": 10**9, "before_seconds": 0}}
        with database.session() as session:
            version = session.get(ExecutorHeartbeat, "proc-b").app_version  # type: ignore[union-attr]
        client.enqueue(EnqueueOptions(queue_name="requests", workflow_name="start_request", app_version=version),
                       timed_id, submission)
        timed = wait_for(lambda: _request_of(database, timed_id), what="the timed request on B", timeout=30)
        assert b.http.post(f"/requests/{timed}/approve", headers=api(approver_token)).status_code == 200
        grant_ends = wait_for(lambda: _grant_end(database, timed), what="the timed grant", timeout=30)
        waiting = b.http.post("/requests", headers=api(member_token), data={
            "resource_id": resources[1], "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
        assert waiting.status_code == 201, waiting.text
        waiting_id, waiting_workflow = waiting.json()["id"], _workflow_of(database, waiting.json()["id"])
        ids = [timed_id, waiting_workflow]
        assert {e for _, e in workflow_executors(client, ids).values()} == {"proc-b"}

        a.start()
        b.kill()  # for good: B's executor never beats again
        killed_at = time.monotonic()
        wait_for(lambda: actions(database)["executor.adopted"] >= 1, what="A to adopt B's workflows", timeout=30)
        # Counted from B's last beat, up to one interval before the kill.
        assert LEASE_SECONDS - 1 <= time.monotonic() - killed_at < LEASE_SECONDS + 5, "adopted once the lease ran out"
        adopted = wait_for(lambda: (lambda w: w if all(e == "proc-a" for _, e in w.values()) else None)(
            workflow_executors(client, ids)), what="A to run both workflows", timeout=30)
        assert all(status == "PENDING" for status, _ in adopted.values())
        with database.session() as session:
            [event] = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "executor.adopted")).all()
            assert (event.subject, event.actor, event.details["by"]) == ("executor:proc-b", "proc-a", "proc-a")
            assert sorted(event.details["workflow_ids"]) == sorted(ids)
            row = session.get(ExecutorHeartbeat, "proc-b")
            assert row is not None and (row.adopted_by, row.adopted_count) == ("proc-a", 2)
        shown = a.http.get("/ops/executors", headers=api(admin_token)).json()["executors"]
        assert {(e["executor_id"], e["adopted_by"]) for e in shown} >= {("proc-b", "proc-a")}

        # Everything finishes through A: the waiting request takes its decision there, and the
        # grant ends when it was due.
        assert a.http.post(f"/requests/{waiting_id}/approve", headers=api(approver_token)).status_code == 200
        ended = wait_for(lambda: _revoked_at(database, timed), what="the grant's end", timeout=GRANT_SECONDS + 30)
        assert abs((ended - grant_ends).total_seconds()) < 3, "the revocation fell due on time"

        # B comes back under its executor id: none of that work is its own any more.
        b.start()
        time.sleep(3)
        assert {e for _, e in workflow_executors(client, ids).values()} == {"proc-a"}
        counted = actions(database)
        assert (counted["request.approved"], counted["grant.revoked"], counted["grant.created"]) == (2, 1, 2), \
            "nothing ran twice"

        # B, paused while it holds a workflow: an operator sees it gone and adopts its work at
        # once (an alive executor is refused); B wakes up adopted and exits.
        third = b.http.post("/requests", headers=api(member_token), data={
            "resource_id": resources[2], "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
        assert third.status_code == 201
        third_workflow = _workflow_of(database, third.json()["id"])
        assert a.http.post("/ops/executors/proc-b/adopt", headers=api(admin_token)).status_code == 409
        assert b.proc is not None
        paused_at = pause_outside_a_transaction(b, pg_settings)
        wait_for(lambda: any(e["executor_id"] == "proc-b" and e["state"] == "gone" for e in a.http.get(
            "/ops/executors", headers=api(admin_token)).json()["executors"]), what="B shown gone", timeout=10)
        manual = a.http.post("/ops/executors/proc-b/adopt", headers=api(admin_token))
        assert time.monotonic() - paused_at < LEASE_SECONDS, "before its lease ran out"
        assert manual.status_code == 200 and third_workflow in manual.json()["adopted"], manual.text
        wait_for(lambda: workflow_executors(client, [third_workflow])[third_workflow][1] == "proc-a",
                 what="A to run the paused B's request", timeout=30)
        with database.session() as session:
            by_operator = session.scalars(sa.select(AuditEvent).where(AuditEvent.action == "executor.adopted")
                                          .order_by(AuditEvent.id.desc())).first()
            assert by_operator is not None and by_operator.actor == "ria@example.test"
            assert by_operator.details["reason"] == "adopted by an operator"
        b.proc.send_signal(signal.SIGCONT)
        assert b.proc.wait(timeout=20) == 75, "the paused process exits when it finds itself adopted"
        b.proc = None
        assert a.http.post(f"/requests/{third.json()['id']}/approve", headers=api(approver_token)).status_code == 200
        wait_for(lambda: actions(database)["request.approved"] == 3, what="the third approval", timeout=30)
        time.sleep(1)
        assert actions(database)["request.approved"] == 3
    finally:
        b.stop()
        a.stop()
        client.destroy()
    log_text = (tmp_path / "b.log").read_text()
    assert "was adopted by proc-a after missing its lease" in log_text
    assert "Traceback" not in (tmp_path / "a.log").read_text()


def open_transactions(settings: Settings, older_than: float) -> int:
    """Sessions on the test's databases inside a transaction begun more than `older_than` s ago."""
    names = [sa.engine.make_url(url).database for url in (settings.database_url, settings.system_database_url)]
    engine = sa.create_engine(sa.engine.make_url(settings.database_url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = ANY(:names) AND xact_start IS NOT NULL "
                "AND xact_start < now() - make_interval(secs => :secs) AND pid <> pg_backend_pid()"),
                {"names": names, "secs": older_than}) or 0)
    finally:
        engine.dispose()


def pause_outside_a_transaction(process: AppProcess, settings: Settings) -> float:
    """SIGSTOP the process, at a moment it holds no transaction open; when it was paused.

    A process frozen inside a transaction keeps its row locks, and adopting its workflows
    waits for them until it is killed: an operator stops (kills) a stuck process before
    adopting its work. Here the pause is retried until it lands between transactions."""
    assert process.proc is not None
    for _ in range(20):
        process.proc.send_signal(signal.SIGSTOP)
        paused_at = time.monotonic()
        time.sleep(0.5)
        if open_transactions(settings, older_than=0.4) == 0:
            return paused_at
        process.proc.send_signal(signal.SIGCONT)
        time.sleep(0.3)
    raise AssertionError("the process was inside a transaction at every pause")


def _request_of(database: Database, workflow_id: str) -> int | None:
    with database.session() as session:
        return session.scalar(sa.select(AccessRequest.id).where(AccessRequest.workflow_id == workflow_id))


def _workflow_of(database: Database, request_id: int) -> str:
    with database.session() as session:
        return session.get(AccessRequest, request_id).workflow_id  # type: ignore[union-attr,return-value]


def _grant_end(database: Database, request_id: int) -> Any:
    with database.session() as session:
        return session.scalar(sa.select(Grant.expires_at).where(Grant.request_id == request_id))


def _revoked_at(database: Database, request_id: int) -> Any:
    with database.session() as session:
        return session.scalar(sa.select(Grant.revoked_at).where(Grant.request_id == request_id))


