"""Grants take effect in real systems (issue 13): approving adds the person through the
resource's agent, and the end of the grant (revoke, expiry) removes them; the grant is active
only once the agent confirmed it and removed only once the removal was. A target that is down
keeps its task retrying, visibly, until it is back; a refusal fails the task loudly."""

from __future__ import annotations

import time
import uuid

import pytest
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

from support.access import REASON, make_agent, make_resource, status_of, submit
from support.pg_roles import PG_SERVER, create_login, drop_role, members_of
from support.receivers import HttpReceiver
from support.scim_server import ScimServer
from support.slapd import GROUPS, Slapd
from support.waiting import wait_for
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import Agent, AuditEvent, ErrorRecord, FulfilmentTask, Grant, Notification
from webapp.services.access import reminder_policy
from webapp.workflows.access import access_request_workflow


def grant_of(database: Database, request_id: int) -> Grant:
    with database.session() as session:
        return session.scalars(sa.select(Grant).where(Grant.request_id == request_id)).one()


def tasks_of(database: Database, grant_id: int) -> list[FulfilmentTask]:
    with database.session() as session:
        return list(session.scalars(sa.select(FulfilmentTask).where(FulfilmentTask.grant_id == grant_id)
                                    .order_by(FulfilmentTask.id)))


def grant_events(database: Database, grant_id: int) -> list[str]:
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject == f"grant:{grant_id}")
                                    .order_by(AuditEvent.id)))


def state_of(database: Database, request_id: int) -> str:
    return grant_of(database, request_id).state


def grants_on(database: Database, resource_id: int) -> list[Grant]:
    with database.session() as session:
        return list(session.scalars(sa.select(Grant).where(Grant.resource_id == resource_id)))


def test_approval_adds_the_role_and_a_revoke_removes_it(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                        pg_group: str) -> None:
    agent_id = make_agent(database, "postgres", {**PG_SERVER, "login_template": "gh_{local}"})
    resource_id = make_resource(database, people, agent_id=agent_id, target=pg_group)
    request_id = submit(clients["member"], resource_id)
    assert post_form(clients["approver"], f"/requests/{request_id}/approve").status_code == 303
    wait_for(lambda: members_of(pg_group) == {"gh_member"}, what="the role granted in PostgreSQL")
    wait_for(lambda: state_of(database, request_id) == "active", what="the grant active")
    grant = grant_of(database, request_id)
    assert grant_events(database, grant.id) == ["grant.created", "grant.active"]  # type: ignore[arg-type]
    page = clients["member"].get(f"/requests/{request_id}")
    assert "active" in page.text

    assert post_form(clients["admin"], f"/grants/{grant.id}/revoke", {"note": "left the team"}).status_code == 303
    wait_for(lambda: members_of(pg_group) == set(), what="the role revoked in PostgreSQL")
    wait_for(lambda: state_of(database, request_id) == "removed", what="the grant removed")
    assert grant_events(database, grant.id) == [  # type: ignore[arg-type]
        "grant.created", "grant.active", "grant.revoked", "grant.removed"]
    tasks = tasks_of(database, grant.id)  # type: ignore[arg-type]
    assert [(t.action, t.status, t.attempts, t.last_error) for t in tasks] == [
        ("add", "done", 0, None), ("remove", "done", 0, None)]
    with database.session() as session:
        assert session.get(Agent, agent_id).healthy is True  # type: ignore[union-attr]


def test_expiry_removes_the_ldap_member_before_saying_so(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                         fast_settings, directory: Slapd) -> None:
    person_dn = directory.add_person("member@example.com", "Mo Member")
    group = directory.add_group(f"cn=wiki,{GROUPS}")
    agent_id = make_agent(database, "ldap", directory.agent_config())
    resource_id = make_resource(database, people, "wiki", auto_approve=True, agent_id=agent_id, target=group)
    submission = {"requester_id": people["member"].id, "resource_id": resource_id, "duration_seconds": 3,
                  "reason": REASON, "reminder": reminder_policy(fast_settings)}
    with SetWorkflowID(f"test-ldap-expiry-{uuid.uuid4().hex}"):
        handle = DBOS.start_workflow(access_request_workflow, submission)
    wait_for(lambda: directory.members(group) == {person_dn.lower()}, what="the LDAP member added")
    assert handle.get_result() == "approved"  # returns once the access is gone
    assert directory.members(group) == set()

    def told_at() -> object:
        with database.session() as session:
            return session.scalar(sa.select(Notification.created_at).where(
                Notification.dedup_key.like("%grant.expired%")))  # type: ignore[attr-defined]

    ended = wait_for(told_at, what="the holder told")
    with database.session() as session:
        grant = session.scalars(sa.select(Grant)).one()
        removed = session.scalar(sa.select(AuditEvent.at).where(AuditEvent.action == "grant.removed"))
    assert grant.state == "removed" and status_of(database, grant.request_id) == "revoked"  # type: ignore[arg-type]
    assert removed is not None and ended >= removed, "told after the removal, not before"


def test_a_directory_that_is_down_is_retried_until_it_is_back(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                             directory: Slapd) -> None:
    person_dn = directory.add_person("member@example.com", "Mo Member").lower()
    group = directory.add_group(f"cn=aws-production,{GROUPS}")
    agent_id = make_agent(database, "ldap", directory.agent_config())
    resource_id = make_resource(database, people, "aws-production", auto_approve=True, agent_id=agent_id,
                                target=group)
    directory.stop()
    request_id = submit(clients["member"], resource_id)
    grant_id = grant_of(database, request_id).id
    wait_for(lambda: tasks_of(database, grant_id)[0].attempts >= 2, what="retries while the directory is down")  # type: ignore[arg-type]
    task = tasks_of(database, grant_id)[0]  # type: ignore[arg-type]
    assert task.status == "queued" and "did not answer" in (task.last_error or "")
    assert state_of(database, request_id) == "provisioning"
    with database.session() as session:
        agent = session.get(Agent, agent_id)
        assert agent.healthy is False and agent.last_error  # type: ignore[union-attr]
        errors = session.scalars(sa.select(ErrorRecord).where(ErrorRecord.source == "agent")).all()
    assert len(errors) == 1, "one error record per new error, not one per retry"
    directory.start()
    wait_for(lambda: state_of(database, request_id) == "active", what="the grant active once the directory is back")
    assert directory.members(group) == {person_dn}

    directory.stop()
    assert post_form(clients["admin"], f"/grants/{grant_id}/revoke", {"note": "done"}).status_code == 303
    wait_for(lambda: len(tasks_of(database, grant_id)) == 2 and tasks_of(database, grant_id)[1].attempts >= 1,  # type: ignore[arg-type]
             what="the removal retrying")
    assert state_of(database, request_id) == "ending"
    directory.start()
    wait_for(lambda: state_of(database, request_id) == "removed", what="the grant removed once the directory is back")
    assert directory.members(group) == set()
    assert grant_events(database, grant_id) == [  # type: ignore[arg-type]
        "grant.created", "grant.active", "grant.revoked", "grant.removed"], "each change once"
    with database.session() as session:
        assert session.get(Agent, agent_id).healthy is True  # type: ignore[union-attr]


def task_ids(database: Database, grant_id: int) -> list[int]:
    return [t.id for t in tasks_of(database, grant_id)]  # type: ignore[misc]


def sent_to(database: Database, event_part: str) -> set[str]:
    with database.session() as session:
        return set(session.scalars(sa.select(Notification.recipient).where(
            Notification.dedup_key.like(f"%{event_part}%"))))  # type: ignore[attr-defined]


def test_a_manual_task_waits_for_its_assignee_and_reminds_then_escalates(clients, database: Database,  # type: ignore[no-untyped-def]
                                                                         people) -> None:
    agent_id = make_agent(database, "manual", {"assignees": "approver@example.com"})
    resource_id = make_resource(database, people, "aws-production", agent_id=agent_id, target="Admins group")
    request_id = submit(clients["member"], resource_id)
    assert post_form(clients["approver2"], f"/requests/{request_id}/approve").status_code == 303
    grant_id = wait_for(lambda: grant_of(database, request_id).id if _has_grant(database, request_id) else None,
                        what="the grant")
    task_id = wait_for(lambda: (task_ids(database, grant_id) or [None])[0], what="the add task")
    wait_for(lambda: tasks_of(database, grant_id)[0].status == "waiting", what="the task waiting for a person")
    assert state_of(database, request_id) == "provisioning"
    to_do = clients["approver"].get("/tasks")
    assert f"/tasks/{task_id}" in to_do.text and "Add Mo Member to aws-production (Admins group)" in to_do.text
    assert f"/tasks/{task_id}" not in clients["approver2"].get("/tasks").text, "not theirs to do"
    assert clients["member"].get(f"/tasks/{task_id}").status_code == 200, "the holder may follow it"
    assert post_form(clients["member"], f"/tasks/{task_id}/done").status_code == 403
    # Told when it appears, reminded, and from the second reminder on the admins hear of it too.
    wait_for(lambda: "approver@example.com" in sent_to(database, f"task.{task_id}.assigned"), what="the assignee told")
    wait_for(lambda: "admin@example.com" in sent_to(database, f"task.{task_id}.reminder.2"), timeout=20,
             what="the escalation to the admins")
    assert "admin@example.com" not in sent_to(database, f"task.{task_id}.reminder.1")

    assert post_form(clients["approver"], f"/tasks/{task_id}/done", {"note": "added in the console"}).status_code == 303
    wait_for(lambda: state_of(database, request_id) == "active", what="the grant active once the person is done")
    assert post_form(clients["approver"], f"/tasks/{task_id}/done").status_code == 409, "done once"
    page = clients["member"].get(f"/requests/{request_id}").text
    assert 'aria-current="step" data-stage="active"' in page

    assert post_form(clients["admin"], f"/grants/{grant_id}/revoke").status_code == 303
    remove_id = wait_for(lambda: task_ids(database, grant_id)[1:] and task_ids(database, grant_id)[1],
                         what="the remove task")
    wait_for(lambda: tasks_of(database, grant_id)[1].status == "waiting", what="the removal waiting for a person")
    assert post_form(clients["approver"], f"/tasks/{remove_id}/cant", {"note": "x"}).status_code == 422
    assert post_form(clients["approver"], f"/tasks/{remove_id}/cant",
                     {"note": "The console is down"}).status_code == 303
    failed = tasks_of(database, grant_id)[1]
    assert failed.status == "failed" and failed.last_error == "The console is down"
    assert state_of(database, request_id) == "ending", "a removal that failed stays open"
    assert post_form(clients["admin"], f"/tasks/{remove_id}/resolve",
                     {"note": "Removed by hand after the outage"}).status_code == 303
    wait_for(lambda: state_of(database, request_id) == "removed", what="the grant removed once resolved")
    history = clients["admin"].get(f"/tasks/{remove_id}").text
    assert "task.failed" in history and "task.done" in history


def _has_grant(database: Database, request_id: int) -> bool:
    with database.session() as session:
        return session.scalar(sa.select(Grant.id).where(Grant.request_id == request_id)) is not None


def test_a_refusal_fails_the_task_loudly_until_someone_retries(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                              pg_group: str) -> None:
    login = f"gh_late_{uuid.uuid4().hex[:6]}"
    agent_id = make_agent(database, "postgres", {**PG_SERVER, "login_template": login})
    resource_id = make_resource(database, people, auto_approve=True, agent_id=agent_id, target=pg_group)
    request_id = submit(clients["member"], resource_id)
    grant_id = grant_of(database, request_id).id
    wait_for(lambda: tasks_of(database, grant_id)[0].status == "failed", what="the task failed")  # type: ignore[arg-type]
    task = tasks_of(database, grant_id)[0]  # type: ignore[arg-type]
    assert f"no login '{login}'" in (task.last_error or "") and task.attempts == 1, "a refusal is not retried"
    with database.session() as session:
        assert session.get(Agent, agent_id).healthy is False  # type: ignore[union-attr]
        assert session.scalars(sa.select(ErrorRecord).where(ErrorRecord.source == "agent")).one()
    admin_page = clients["admin"].get("/tasks").text
    assert f"/tasks/{task.id}" in admin_page and "no login" in admin_page
    assert f"/tasks/{task.id}" not in clients["approver"].get("/tasks").text
    assert post_form(clients["approver"], f"/tasks/{task.id}/retry").status_code == 404, "not theirs to see"
    create_login(login)  # someone fixed the cause
    try:
        assert post_form(clients["admin"], f"/tasks/{task.id}/retry").status_code == 303
        wait_for(lambda: state_of(database, request_id) == "active", what="active after the retry")
        assert members_of(pg_group) == {login}
        assert post_form(clients["admin"], f"/tasks/{task.id}/retry").status_code == 409
    finally:
        drop_role(login)


def test_deactivating_a_person_removes_their_access_through_the_agent(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                                     pg_group: str) -> None:
    agent_id = make_agent(database, "postgres", {**PG_SERVER, "login_template": "gh_{local}"})
    resource_id = make_resource(database, people, auto_approve=True, agent_id=agent_id, target=pg_group)
    request_id = submit(clients["member"], resource_id, "30d")
    wait_for(lambda: members_of(pg_group) == {"gh_member"}, what="the role granted")
    response = post_form(clients["admin"], f"/admin/users/{people['member'].id}/active", {"active": "false"})
    assert response.status_code == 303
    wait_for(lambda: members_of(pg_group) == set(), timeout=20, what="the role revoked after the deactivation")
    wait_for(lambda: state_of(database, request_id) == "removed", what="the grant removed")
    grant = grant_of(database, request_id)
    with database.session() as session:
        reason = session.scalar(sa.select(AuditEvent.details).where(AuditEvent.subject == f"grant:{grant.id}",
                                                                   AuditEvent.action == "grant.revoked"))
    assert reason["reason"] == "person deactivated"  # type: ignore[index]


def test_approval_adds_the_scim_member_and_a_revoke_removes_it(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    with ScimServer() as scim:
        monkeypatch.setenv("GATEHOUSE_AGENT_TEST_SCIM_TOKEN", scim.token)
        user_id = scim.add_user("member@example.com", "Mo Member")
        group = scim.add_group("wiki")
        agent_id = make_agent(database, "scim", scim.agent_config())
        resource_id = make_resource(database, people, "wiki", auto_approve=True, agent_id=agent_id, target=group)
        request_id = submit(clients["member"], resource_id)
        wait_for(lambda: state_of(database, request_id) == "active", what="the grant active")
        assert scim.members(group) == {user_id}
        grant_id = grant_of(database, request_id).id
        assert post_form(clients["admin"], f"/grants/{grant_id}/revoke").status_code == 303
        wait_for(lambda: state_of(database, request_id) == "removed", what="the grant removed")
        assert scim.members(group) == set()


def test_ending_one_of_two_grants_keeps_the_membership_the_other_gives(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                                       pg_group: str) -> None:
    agent_id = make_agent(database, "postgres", {**PG_SERVER, "login_template": "gh_{local}"})
    resource_id = make_resource(database, people, auto_approve=True, agent_id=agent_id, target=pg_group)
    first = submit(clients["member"], resource_id, "30d")
    # A second grant of the same (an operator's batch, or an extension whose grant had ended):
    # the form would offer to extend the first instead.
    submission = {"requester_id": people["member"].id, "resource_id": resource_id, "duration_seconds": 30 * 86400,
                  "reason": REASON, "reminder": reminder_policy(clients["member"].app.state.settings)}
    with SetWorkflowID(f"test-second-grant-{uuid.uuid4().hex}"):
        DBOS.start_workflow(access_request_workflow, submission)
    second = wait_for(lambda: next((g.request_id for g in grants_on(database, resource_id) if g.request_id != first),
                                   None), what="the second grant")
    wait_for(lambda: state_of(database, first) == state_of(database, second) == "active", what="both grants active")
    assert post_form(clients["admin"], f"/grants/{grant_of(database, first).id}/revoke").status_code == 303
    wait_for(lambda: state_of(database, first) == "removed", what="the first grant ended")
    assert members_of(pg_group) == {"gh_member"}, "the second grant still gives the role"
    assert post_form(clients["admin"], f"/grants/{grant_of(database, second).id}/revoke").status_code == 303
    wait_for(lambda: members_of(pg_group) == set(), what="the role removed with the last grant")


def test_an_agent_outside_the_allowed_hosts_fails_its_task_without_connecting(clients, database: Database,  # type: ignore[no-untyped-def]
                                                                              people) -> None:
    agent_id = make_agent(database, "postgres", {"host": "10.9.8.7", "login_template": "{local}"})
    resource_id = make_resource(database, people, auto_approve=True, agent_id=agent_id, target="reporting")
    request_id = submit(clients["member"], resource_id)
    grant_id = grant_of(database, request_id).id
    wait_for(lambda: tasks_of(database, grant_id)[0].status == "failed", what="the task refused")  # type: ignore[arg-type]
    assert "10.9.8.7 is not in AGENT_ALLOWED_HOSTS" in (tasks_of(database, grant_id)[0].last_error or "")  # type: ignore[arg-type]
    assert state_of(database, request_id) == "provisioning"


def test_a_removal_held_back_by_an_outage_never_takes_the_access_a_newer_grant_gives(clients, database: Database,  # type: ignore[no-untyped-def]
                                                                                    people, directory: Slapd) -> None:
    person_dn = directory.add_person("member@example.com", "Mo Member").lower()
    group = directory.add_group(f"cn=aws-production,{GROUPS}")
    agent_id = make_agent(database, "ldap", directory.agent_config())
    resource_id = make_resource(database, people, "aws-production", auto_approve=True, agent_id=agent_id,
                                target=group)
    first = submit(clients["member"], resource_id, "30d")
    wait_for(lambda: state_of(database, first) == "active", what="the first grant active")
    directory.stop()
    assert post_form(clients["admin"], f"/grants/{grant_of(database, first).id}/revoke").status_code == 303
    wait_for(lambda: tasks_of(database, grant_of(database, first).id)[-1].attempts >= 1,  # type: ignore[arg-type]
             what="the first grant's removal retrying")
    second = submit(clients["member"], resource_id, "30d")  # asked again while the directory is down
    directory.start()
    wait_for(lambda: state_of(database, second) == "active" and state_of(database, first) == "removed",
             what="the new grant on, the old one off")
    assert directory.members(group) == {person_dn}, "the old removal did not take the new grant's access"
    kept = tasks_of(database, grant_of(database, first).id)[-1]  # type: ignore[arg-type]
    assert kept.status == "done" and kept.note.startswith("Kept: grant #")
    assert post_form(clients["admin"], f"/grants/{grant_of(database, second).id}/revoke").status_code == 303
    wait_for(lambda: directory.members(group) == set(), what="the access gone with the last grant")


def test_nobody_is_assigned_the_task_about_their_own_access(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    agent_id = make_agent(database, "manual", {})
    resource_id = make_resource(database, people, "wiki", auto_approve=True, agent_id=agent_id, target="Wiki admins",
                                owner_id=people["member"].id)  # the holder owns the resource
    request_id = submit(clients["member"], resource_id)
    grant_id = grant_of(database, request_id).id
    task_id = wait_for(lambda: (task_ids(database, grant_id) or [None])[0], what="the add task")  # type: ignore[arg-type]
    wait_for(lambda: tasks_of(database, grant_id)[0].status == "waiting", what="waiting for a person")  # type: ignore[arg-type]
    assert f"/tasks/{task_id}" not in clients["member"].get("/tasks").text.split("All tasks")[0]
    assert post_form(clients["member"], f"/tasks/{task_id}/done").status_code == 403
    assert f"/tasks/{task_id}" in clients["admin"].get("/tasks").text.split("All tasks")[0], "the admins do it"


def test_changes_to_one_membership_run_one_at_a_time_and_other_people_in_parallel(  # type: ignore[no-untyped-def]
        clients, database: Database, people, webhook_server: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two grants of the member on the same target (through two resources) change one
    membership: their attempts never overlap in the target, so an add and a removal cannot
    cross. Another person's change on that target runs meanwhile."""
    monkeypatch.setenv("GATEHOUSE_AGENT_SERIAL_SECRET", "whsec-serial")
    webhook_server.hold_seconds = 2.5  # wide enough for the three submissions to land within it
    agent_id = make_agent(database, "webhook", {"url": webhook_server.url, "secret_env": "GATEHOUSE_AGENT_SERIAL_SECRET"},
                          concurrency=4)
    first, second = (make_resource(database, people, name, auto_approve=True, agent_id=agent_id, target="engineers")
                     for name in ("team-a", "team-b"))
    submit(clients["approver2"], first)
    submit(clients["member"], first)
    submit(clients["member"], second)
    wait_for(lambda: len(webhook_server.spans) == 3, timeout=30, what="three changes made")
    by_person: dict[str, list[tuple[float, float]]] = {}
    for post, started, ended in webhook_server.spans:
        by_person.setdefault(post.body["person"]["email"], []).append((started, ended))
    (a, b), [other] = sorted(by_person["member@example.com"]), by_person["approver2@example.com"]
    assert a[1] <= b[0], "the member's two changes of one membership overlapped"
    assert any(other[0] < span[1] and span[0] < other[1] for span in (a, b)), \
        "another person's change waited for the member's"


def test_attempts_enqueued_before_agent_queues_were_partitioned_still_run(clients) -> None:  # type: ignore[no-untyped-def]
    """An upgrade: an attempt waiting on an agent queue without a partition key (enqueued by
    the version before) would never be dequeued from the now partitioned queue; the start
    gives it a key of its own."""
    from webapp.services.agent_settings import AGENT_QUEUE_PREFIX, queue_of
    from webapp.workflows import fulfilment, runtime

    name = queue_of(987_654)
    DBOS.register_queue(name, partition_concurrency=1, polling_interval_sec=0.05)
    attempt_id = f"legacy-attempt-{uuid.uuid4().hex}"
    with SetWorkflowID(attempt_id):
        DBOS.enqueue_workflow(name, fulfilment.attempt_workflow, 987_654, "nobody", "attempt-1")
    time.sleep(0.5)
    assert DBOS.get_workflow_status(attempt_id).status == "ENQUEUED", "stuck without a key"  # type: ignore[union-attr]
    assert runtime.key_unpartitioned(AGENT_QUEUE_PREFIX) == 1
    wait_for(lambda: DBOS.get_workflow_status(attempt_id).status != "ENQUEUED", what="the attempt dequeued")  # type: ignore[union-attr]
