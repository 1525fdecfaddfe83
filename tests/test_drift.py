"""Drift checks against the real systems (issue 13): a member added by hand in LDAP or in
PostgreSQL is reported; with the resource in "correct" mode it is removed, audited and
announced; a grant whose membership vanished is reported and, when correcting, restored."""

from __future__ import annotations

import uuid

import psycopg
import sqlalchemy as sa
from psycopg import sql

from support.access import make_agent, make_resource, submit
from support.pg_roles import PG_SERVER, create_login, drop_role, members_of
from support.slapd import GROUPS, Slapd
from support.waiting import wait_for
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import Agent, AuditEvent, DriftFinding, Grant, Notification, Resource, utcnow
from webapp.services import drift
from webapp.workflows.drift import cron


def active(database: Database, request_id: int) -> bool:
    with database.session() as session:
        return session.scalar(sa.select(Grant.state).where(Grant.request_id == request_id)) == "active"


def findings(database: Database, resource_id: int) -> list[tuple[str, str, bool]]:
    with database.session() as session:
        return sorted((f.kind, f.member, f.corrected) for f in session.scalars(
            sa.select(DriftFinding).where(DriftFinding.resource_id == resource_id)))


def audited(database: Database, action: str, resource_id: int) -> list[dict]:  # type: ignore[type-arg]
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent.details).where(
            AuditEvent.action == action, AuditEvent.subject == f"resource:{resource_id}").order_by(AuditEvent.id)))


def set_policy(database: Database, resource_id: int, policy: str) -> None:
    with database.session() as session:
        session.get(Resource, resource_id).drift_policy = policy  # type: ignore[union-attr]


def check_now(client, agent_id: int) -> str:  # type: ignore[no-untyped-def]
    response = post_form(client, f"/admin/agents/{agent_id}/drift")
    assert response.status_code == 303, response.text
    return client.get(f"/admin/agents/{agent_id}").text


def test_ldap_drift_is_reported_then_corrected(clients, database: Database, people, directory: Slapd) -> None:  # type: ignore[no-untyped-def]
    holder = directory.add_person("member@example.com", "Mo Member").lower()
    stranger = directory.add_person("stranger@example.com", "Sam Stranger").lower()
    group = directory.add_group(f"cn=aws-production,{GROUPS}")
    agent_id = make_agent(database, "ldap", directory.agent_config())
    resource_id = make_resource(database, people, "aws-production", auto_approve=True, agent_id=agent_id,
                                target=group)
    request_id = submit(clients["member"], resource_id, "30d")
    wait_for(lambda: active(database, request_id), what="the grant active")
    directory.add_member(group, stranger)  # access given outside Gatehouse

    page = check_now(clients["admin"], agent_id)
    assert findings(database, resource_id) == [("extra", stranger, False)]
    assert stranger in page and "member without a grant" in page
    assert directory.members(group) == {holder, stranger}, "report mode changes nothing"
    assert audited(database, "drift.found", resource_id)[0]["extra"] == [stranger]
    assert clients["admin"].get("/dashboard/counters", headers={"Accept": "application/json"}).json()["drift"] == 1
    with database.session() as session:
        agent = session.get(Agent, agent_id)
        assert agent.drift_found == 1 and agent.drift_checked_at is not None  # type: ignore[union-attr]

    set_policy(database, resource_id, "correct")
    check_now(clients["admin"], agent_id)
    assert directory.members(group) == {holder}
    assert findings(database, resource_id) == [("extra", stranger, True)]
    assert audited(database, "drift.corrected", resource_id)[-1]["removed"] == [stranger]
    wait_for(lambda: _announced(database, "admin@example.com", "Corrected 1 of 1"), what="the correction announced")

    resource_page = clients["admin"].get(f"/admin/resources/{resource_id}").text
    assert f"Member without a grant: {stranger} (corrected)" in resource_page
    assert ">0</span> <span class=\"counter-label\">differences" in clients["admin"].get("/").text, "corrected: none stand"
    check_now(clients["admin"], agent_id)
    assert findings(database, resource_id) == [], "nothing left to find"


def _announced(database: Database, recipient: str, text: str) -> bool:
    with database.session() as session:
        return any(text in body for body in session.scalars(sa.select(Notification.body).where(
            Notification.recipient == recipient, Notification.subject.like("Drift in %"))))  # type: ignore[attr-defined]


def test_postgres_drift_finds_a_hand_grant_and_a_lost_membership(clients, database: Database, people,  # type: ignore[no-untyped-def]
                                                                 pg_group: str) -> None:
    outsider = f"gh_outsider_{uuid.uuid4().hex[:6]}"
    create_login(outsider)
    try:
        agent_id = make_agent(database, "postgres", {**PG_SERVER, "login_template": "gh_{local}"})
        resource_id = make_resource(database, people, auto_approve=True, agent_id=agent_id, target=pg_group,
                                    drift_policy="correct")
        request_id = submit(clients["member"], resource_id, "30d")
        wait_for(lambda: active(database, request_id), what="the grant active")
        with psycopg.connect(**PG_SERVER, autocommit=True) as conn:  # type: ignore[arg-type]
            conn.execute(sql.SQL("GRANT {} TO {}").format(sql.Identifier(pg_group), sql.Identifier(outsider)))
            conn.execute(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(pg_group), sql.Identifier("gh_member")))
        check_now(clients["admin"], agent_id)
        assert findings(database, resource_id) == [("extra", outsider, True), ("missing", "gh_member", True)]
        assert members_of(pg_group) == {"gh_member"}, "the extra removed, the missing restored"
        corrected = audited(database, "drift.corrected", resource_id)[-1]
        assert corrected["removed"] == [outsider] and corrected["added"] == ["gh_member"]
    finally:
        drop_role(outsider)


def test_a_drift_check_of_an_unreachable_target_says_so(clients, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    from support.receivers import free_port

    agent_id = make_agent(database, "postgres", {**PG_SERVER, "port": free_port()})
    make_resource(database, people, agent_id=agent_id, target="reporting")
    page = check_now(clients["admin"], agent_id)
    assert "Could not read" in page and "did not answer" in page
    with database.session() as session:
        assert session.get(Agent, agent_id).healthy is False  # type: ignore[union-attr]


def test_schedules_spread_agents_over_the_hour() -> None:
    assert cron(7, 3600) == "0 7 */1 * * *"
    assert cron(61, 900) == "1 */15 * * * *"
    assert cron(3, 2 * 86400) == "0 3 3 * * *"


def test_a_grant_that_changes_while_the_target_is_read_is_neither_extra_nor_missing(  # type: ignore[no-untyped-def]
        database: Database, people) -> None:
    """The check reads the grants, then the target: the member is added for a grant made in
    between, and the holder's grant ends (and their membership goes) in between. Neither may
    be taken for drift, or a check in "correct" mode would undo what just happened."""
    agent_id = make_agent(database, "postgres", PG_SERVER)
    resource_id = make_resource(database, people, "orders-db", agent_id=agent_id, target="orders_readers")
    with database.session() as session:
        leaving = Grant(request_id=None, user_id=people["approver2"].id, resource_id=resource_id, state="active")
        session.add(leaving)
        session.flush()
        leaving_id = leaving.id
        before = drift.plan(session, agent_id)["resources"][0]  # type: ignore[index]
    assert [h["email"] for h in before["holders"]] == ["approver2@example.com"] and before["in_flux"] == []
    with database.session() as session:  # meanwhile: a new grant made active, the old one ended
        session.add(Grant(request_id=None, user_id=people["member"].id, resource_id=resource_id, state="active"))
        ended = session.get(Grant, leaving_id)
        ended.state, ended.revoked_at = "removed", utcnow()  # type: ignore[union-attr]
    members_read = {"gh_member"}  # the target, read after both changes
    names = {"member@example.com": "gh_member", "approver2@example.com": "gh_approver2"}
    with database.session() as session:
        after = drift.replan(session, before)
    assert after["holders"] == []
    assert sorted(h["email"] for h in after["in_flux"]) == ["approver2@example.com", "member@example.com"]
    in_flux = {names[h["email"]] for h in after["in_flux"]}
    assert drift.compare(after["holders"], names, members_read, in_flux) == []
    # Read with the first plan alone, both would have been drift: the test shows what replan prevents.
    assert {f["kind"] for f in drift.compare(before["holders"], names, members_read, set())} == {"extra", "missing"}
