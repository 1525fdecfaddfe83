"""Grants take effect in real systems (issue 13): approving adds the person through the
resource's agent, and the end of the grant (revoke, expiry) removes them; the grant is active
only once the agent confirmed it and removed only once the removal was. A target that is down
keeps its task retrying, visibly, until it is back; a refusal fails the task loudly."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

from support.access import REASON, make_agent, make_resource, status_of, submit
from support.pg_roles import PG_SERVER, create_login, group_role, members_of, pg_server_up
from support.slapd import GROUPS, Slapd, available
from support.waiting import wait_for
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import Agent, AuditEvent, ErrorRecord, FulfilmentTask, Grant, Notification
from webapp.services.access import reminder_policy
from webapp.workflows.access import access_request_workflow


@pytest.fixture
def pg_group() -> Iterator[str]:
    if not pg_server_up():
        pytest.skip("needs the local PostgreSQL server (127.0.0.1:5432)")
    create_login("gh_member")
    with group_role() as group:
        yield group


@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slapd]:
    if not available():
        pytest.skip("needs OpenLDAP's slapd (Debian package slapd; .ci/run installs it)")
    with Slapd(tmp_path) as running:
        monkeypatch.setenv("GATEHOUSE_TEST_LDAP_PASSWORD", running.password)
        yield running


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
