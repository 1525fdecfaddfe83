"""Admins add and change agents (settings that only ever name a secret), test their connection
against real systems, and point resources at them; nobody else reaches these pages."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_agent
from support.pg_roles import PG_SERVER, pg_server_up
from support.receivers import free_port
from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import Agent, AuditEvent, Resource

JSON = {"Accept": "application/json"}
SECRET_NAME = "GATEHOUSE_AGENT_TEST_PASSWORD"
SECRET_VALUE = "s3cret-value-that-must-never-show"
needs_pg = pytest.mark.skipif(not pg_server_up(), reason="needs PostgreSQL on 127.0.0.1:5432")


def agent_form(name: str = "warehouse-pg", kind: str = "postgres", settings: str = "", **fields: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "settings": settings, "concurrency": "2", "rate_limit": "30",
            "rate_period_seconds": "60", "drift_interval_minutes": "60", **fields}


def pg_settings(port: int | None = None) -> str:
    return (f"host = {PG_SERVER['host']}\nport = {port or PG_SERVER['port']}\n"
            f"dbname = {PG_SERVER['dbname']}\nuser = {PG_SERVER['user']}")


def agents(database: Database) -> list[Agent]:
    with database.session() as session:
        return list(session.scalars(sa.select(Agent).order_by(Agent.id)))


def actions(database: Database, subject: str) -> list[str]:
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject == subject)
                                    .order_by(AuditEvent.id)))


def add_agent(admin: TestClient, database: Database, **form: Any) -> int:
    response = post_form(admin, "/admin/agents", agent_form(**form))
    assert response.status_code == 303 and response.headers["location"] == "/admin/agents", response.text[:300]
    return max(a.id for a in agents(database))  # type: ignore[type-var, return-value]


def test_admin_adds_an_agent_through_the_form(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    text = "host = 127.0.0.1\nport = 5433\n# where the password lives\npassword_env = GATEHOUSE_AGENT_WAREHOUSE_PW\n"
    agent_id = add_agent(admin, database, settings=text)
    [agent] = agents(database)
    assert (agent.name, agent.kind, agent.concurrency, agent.rate_limit) == ("warehouse-pg", "postgres", 2, 30)
    assert agent.settings == {"host": "127.0.0.1", "port": 5433, "password_env": "GATEHOUSE_AGENT_WAREHOUSE_PW"}
    assert agent.healthy is None and agent.drift_interval_seconds == 3600
    assert actions(database, f"agent:{agent_id}") == ["agent.created"]

    listing = admin.get("/admin/agents")
    assert listing.status_code == 200
    assert f'href="/admin/agents/{agent_id}"' in listing.text and f"agent-{agent_id}" in listing.text
    assert "not checked yet" in listing.text and "2 at a time" in listing.text and "30 per 60 s" in listing.text
    fragment = admin.get("/admin/agents", headers={"HX-Request": "true"})
    assert 'id="agents-table"' in fragment.text and "<html" not in fragment.text
    [row] = admin.get("/admin/agents", headers=JSON).json()["agents"]
    assert row["id"] == agent_id and row["queue"] == f"agent-{agent_id}" and row["open_tasks"] == 0
    assert row["health"] == "not checked yet" and row["resources"] == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("password = hunter2", "would hold a secret"),
    ("host = db.internal\nPassword=hunter2", "would hold a secret"),
    ("password_env = hunter2", "must name an environment variable"),
    ("password_env = SECRET_KEY", "must name a variable starting with GATEHOUSE_AGENT_"),
    ("password_file = hunter2", "absolute path"),
    ("colour = blue", "no setting"),
    ("host = " + "h" * 501, "too long"),
])
def test_settings_that_hold_a_secret_or_are_unknown_are_refused(clients: dict[str, TestClient], database: Database,
                                                                text: str, expected: str) -> None:
    admin = clients["admin"]
    refused = post_form(admin, "/admin/agents", agent_form(settings=text))
    assert refused.status_code == 422 and 'id="settings-error"' in refused.text and expected in refused.text
    assert "hunter2" not in refused.text, "a typed secret is not sent back"
    as_json = post_form(admin, "/admin/agents", agent_form(settings=text), headers=JSON)
    assert as_json.status_code == 422 and expected in as_json.json()["fields"]["settings"]
    assert agents(database) == []
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AuditEvent)
                              .where(AuditEvent.action.like("agent.%"))) == 0  # type: ignore[attr-defined]


def test_bad_fields_and_a_duplicate_name_are_refused(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    bad = post_form(admin, "/admin/agents", agent_form(name="<b>x</b>", kind="ftp", concurrency="0"))
    assert bad.status_code == 422
    assert all(f'id="{field}-error"' in bad.text for field in ("name", "kind", "concurrency"))
    assert "<b>x</b>" not in bad.text
    add_agent(admin, database, name="directory", kind="ldap", settings="url = ldaps://ldap.example.com")
    again = post_form(admin, "/admin/agents", agent_form(name="directory", kind="manual"))
    assert again.status_code == 422 and "already exists" in again.text and 'id="name-error"' in again.text
    assert [a.name for a in agents(database)] == ["directory"]


def test_the_agent_page_names_secrets_but_never_shows_them(clients: dict[str, TestClient], database: Database,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_NAME, SECRET_VALUE)
    admin = clients["admin"]
    agent_id = add_agent(admin, database, name="hooks", kind="webhook",
                         settings=f"url = http://127.0.0.1:{free_port()}/hook\nsecret_env = {SECRET_NAME}")
    page = admin.get(f"/admin/agents/{agent_id}")
    assert page.status_code == 200 and SECRET_NAME in page.text and SECRET_VALUE not in page.text
    post_form(admin, f"/admin/agents/{agent_id}/check")
    for answer in (admin.get(f"/admin/agents/{agent_id}"), admin.get(f"/admin/agents/{agent_id}", headers=JSON),
                   admin.get("/admin/agents"), admin.get("/admin/agents", headers=JSON)):
        assert answer.status_code == 200 and SECRET_VALUE not in answer.text
    assert SECRET_NAME in admin.get(f"/admin/agents/{agent_id}", headers=JSON).json()["agent"]["settings"]["secret_env"]


def test_an_admin_changes_an_agent(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    agent_id = add_agent(admin, database, name="people-directory", kind="ldap",
                         settings="url = ldap://127.0.0.1:389\nkeep_members = cn=svc,dc=example; cn=ops,dc=example")
    page = admin.get(f"/admin/agents/{agent_id}")
    assert "keep_members = cn=svc,dc=example\nkeep_members = cn=ops,dc=example" in page.text  # the edit form
    saved = post_form(admin, f"/admin/agents/{agent_id}", agent_form(
        name="people-directory", kind="ldap", concurrency="1",
        settings="url = ldaps://ldap.example.com\nbind_dn = cn=gatehouse,dc=example\n"
                 "password_file = /run/secrets/ldap"))
    assert saved.status_code == 303 and saved.headers["location"] == f"/admin/agents/{agent_id}"
    [agent] = agents(database)
    assert agent.concurrency == 1 and agent.settings == {
        "url": "ldaps://ldap.example.com", "bind_dn": "cn=gatehouse,dc=example", "password_file": "/run/secrets/ldap"}
    assert actions(database, f"agent:{agent_id}") == ["agent.created", "agent.updated"]
    refused = post_form(admin, f"/admin/agents/{agent_id}", agent_form(name="people-directory", kind="ldap",
                                                                        settings="token_env = X"))
    assert refused.status_code == 422 and "no setting &#39;token_env&#39;" in refused.text
    assert agents(database)[0].settings["url"] == "ldaps://ldap.example.com"
    assert admin.get("/admin/agents/999999").status_code == 404
    assert admin.get("/admin/agents/999999", headers=JSON).json()["status"] == 404


@needs_pg
def test_connection_test_against_the_local_postgresql(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    agent_id = add_agent(admin, database, name="local-pg", settings=pg_settings())
    checked = post_form(admin, f"/admin/agents/{agent_id}/check")
    assert checked.status_code == 303 and checked.headers["location"] == f"/admin/agents/{agent_id}"
    page = admin.get(f"/admin/agents/{agent_id}")
    assert "Connected to PostgreSQL" in page.text and "healthy" in page.text
    [agent] = agents(database)
    assert agent.healthy is True and agent.last_error is None and agent.checked_at is not None
    assert actions(database, f"agent:{agent_id}") == ["agent.created", "agent.checked"]
    answer = post_form(admin, f"/admin/agents/{agent_id}/check", headers=JSON).json()
    assert answer["healthy"] is True and answer["message"].startswith("Connected to PostgreSQL")


def test_connection_test_against_a_closed_port(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    agent_id = add_agent(admin, database, name="gone-pg", settings=pg_settings(port=free_port()))
    assert post_form(admin, f"/admin/agents/{agent_id}/check").status_code == 303
    page = admin.get(f"/admin/agents/{agent_id}")
    assert "did not answer" in page.text and 'class="flash flash-error"' in page.text
    [agent] = agents(database)
    assert agent.healthy is False and agent.last_error and "did not answer" in agent.last_error
    assert "unhealthy: PostgreSQL at 127.0.0.1" in admin.get("/admin/agents").text


def test_a_manual_agent_has_nothing_to_connect_to(clients: dict[str, TestClient], database: Database) -> None:
    admin = clients["admin"]
    agent_id = add_agent(admin, database, name="service-desk", kind="manual",
                         settings="assignees = Approver@example.com, admin@example.com")
    assert agents(database)[0].settings == {"assignees": "approver@example.com, admin@example.com"}
    post_form(admin, f"/admin/agents/{agent_id}/check")
    assert "Nothing to connect to: a person does this agent&#39;s work." in admin.get(f"/admin/agents/{agent_id}").text
    assert agents(database)[0].healthy is None


def resource_form(**fields: Any) -> dict[str, Any]:
    return {"name": "warehouse", "kind": "database", "approvals_required": "1", "max_duration": "permanent",
            "pending_ttl_hours": "72", "approvers": [], "auto_approve": "on", **fields}


def test_a_resource_keeps_its_agent_and_target(clients: dict[str, TestClient], database: Database, people) -> None:  # type: ignore[no-untyped-def]
    admin = clients["admin"]
    agent_id = make_agent(database, "postgres", {"host": "127.0.0.1"}, name="warehouse-pg")
    manual_id = make_agent(database, "manual", {}, name="desk")
    no_target = post_form(admin, "/admin/resources", resource_form(agent_id=str(agent_id)))
    assert no_target.status_code == 422 and "Name the target" in no_target.text
    unknown = post_form(admin, "/admin/resources", resource_form(agent_id="999999", target="x"))
    assert unknown.status_code == 422 and "Choose an agent from the list" in unknown.text
    garbage = post_form(admin, "/admin/resources", resource_form(agent_id="²", target="x", drift_policy="maybe"))
    assert garbage.status_code == 422
    assert 'id="agent_id-error"' in garbage.text and 'id="drift_policy-error"' in garbage.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Resource)) == 0

    saved = post_form(admin, "/admin/resources", resource_form(agent_id=str(agent_id), target=" analysts ",
                                                               drift_policy="correct"))
    assert saved.status_code == 303
    with database.session() as session:
        resource = session.scalars(sa.select(Resource)).one()
        assert (resource.agent_id, resource.target, resource.drift_policy) == (agent_id, "analysts", "correct")
        resource_id = resource.id
    page = admin.get(f"/admin/resources/{resource_id}")
    assert f'<option value="{agent_id}" selected>' in page.text and 'value="analysts"' in page.text
    assert '<option value="correct" selected>' in page.text
    assert "warehouse-pg</a>: analysts" in admin.get("/admin/resources").text
    assert "Resources using it (1)" in admin.get(f"/admin/agents/{agent_id}").text

    manual = post_form(admin, f"/admin/resources/{resource_id}", resource_form(agent_id=str(manual_id), target=""))
    assert manual.status_code == 303, "a manual agent needs no target"
    kind_change = post_form(admin, f"/admin/agents/{manual_id}", agent_form(name="desk", kind="webhook",
                                                                            settings="url = https://x.example"))
    assert kind_change.status_code == 422 and "cannot change while resources use it" in kind_change.text


@pytest.mark.parametrize("role", ["member", "approver"])
def test_only_admins_reach_agents(clients: dict[str, TestClient], database: Database, role: str) -> None:
    agent_id = make_agent(database, "manual", {}, name="desk")
    browser = clients[role]
    for method, path, data in [("GET", "/admin/agents", None), ("POST", "/admin/agents", agent_form()),
                               ("GET", f"/admin/agents/{agent_id}", None),
                               ("POST", f"/admin/agents/{agent_id}", agent_form(name="desk", kind="manual")),
                               ("POST", f"/admin/agents/{agent_id}/check", {})]:
        response = browser.get(path) if method == "GET" else post_form(browser, path, data)
        assert response.status_code == 403, (role, method, path)
    assert [a.name for a in agents(database)] == ["desk"] and actions(database, f"agent:{agent_id}") == []
