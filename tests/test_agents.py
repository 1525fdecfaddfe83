"""The agents against the real systems (issue 13): PostgreSQL roles on the local server, an
OpenLDAP slapd started here, a SCIM server on loopback. Each operation is idempotent, and
each failure says whether trying again can help."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from support.pg_roles import PG_SERVER, create_login, group_role, members_of, pg_server_up
from support.receivers import HttpReceiver, free_port
from support.scim_server import ScimServer
from support.slapd import GROUPS, Slapd
from webapp.agents import agent_for, reach
from webapp.agents.base import Change, Person, Refused, SecretRef, Unreachable
from webapp.agents.ldap import LdapAgent
from webapp.agents.postgres import PostgresAgent
from webapp.agents.scim import ScimAgent
from webapp.agents.webhook import WebhookAgent, verify

JAMAL = Person("jamal.carter@example.test", "Jamal Carter")


@pytest.fixture
def pg_roles() -> Iterator[dict[str, str]]:
    """A group role and a login role for Jamal, made for this test on the local server."""
    if not pg_server_up():
        pytest.skip("needs the local PostgreSQL server (127.0.0.1:5432)")
    create_login("jamal.carter")
    with group_role("gh_reporting") as group:
        yield {"group": group, "login": "jamal.carter"}


def test_postgres_grants_and_revokes_a_role_idempotently(pg_roles: dict[str, str]) -> None:
    agent = PostgresAgent.from_config(PG_SERVER)
    assert "can grant roles" in agent.check()
    group = pg_roles["group"]
    agent.add(JAMAL, group)
    agent.add(JAMAL, group)  # again: still one membership, no error
    assert members_of(group) == {"jamal.carter"} == agent.members(group)
    agent.remove(JAMAL, group)
    agent.remove(JAMAL, group)  # already gone: fine
    assert members_of(group) == set() == agent.members(group)


def test_postgres_refusals_say_what_is_missing(pg_roles: dict[str, str]) -> None:
    agent = PostgresAgent.from_config(PG_SERVER)
    with pytest.raises(Refused, match="no role 'gh_absent'"):
        agent.add(JAMAL, "gh_absent")
    with pytest.raises(Refused, match="no login 'nobody.here'"):
        agent.add(Person("nobody.here@example.test", "Nobody"), pg_roles["group"])
    with pytest.raises(Refused, match="refused the agent's login"):
        PostgresAgent.from_config({**PG_SERVER, "user": "no_such_agent_login"}).check()
    with pytest.raises(Unreachable, match="did not answer"):
        PostgresAgent.from_config({**PG_SERVER, "port": free_port()}).add(JAMAL, pg_roles["group"])
    assert members_of(pg_roles["group"]) == set(), "nothing half-applied"


def test_postgres_secrets_come_from_the_environment_never_the_settings(pg_roles: dict[str, str]) -> None:
    agent = PostgresAgent.from_config({**PG_SERVER, "password_env": "GATEHOUSE_AGENT_TEST_UNSET_SECRET"})
    os.environ.pop("GATEHOUSE_AGENT_TEST_UNSET_SECRET", None)
    with pytest.raises(Refused, match="GATEHOUSE_AGENT_TEST_UNSET_SECRET"):
        agent.check()


@pytest.mark.parametrize("unique", [False, True], ids=["groupOfNames", "groupOfUniqueNames"])
def test_ldap_adds_and_removes_a_member_idempotently(directory: Slapd, unique: bool) -> None:
    dn = directory.add_person(JAMAL.email, JAMAL.name)
    group = directory.add_group(f"cn=aws-production,{GROUPS}", unique=unique)
    agent = LdapAgent.from_config(directory.agent_config())
    assert "is readable" in agent.check()
    agent.add(JAMAL, group)
    agent.add(JAMAL, group)
    assert directory.members(group) == {dn.lower()} == agent.members(group)
    assert agent.member_name(JAMAL) == dn.lower()
    agent.remove(JAMAL, group)
    agent.remove(JAMAL, group)
    assert directory.members(group) == set() == agent.members(group)


def test_ldap_refusals_and_an_unreachable_directory(directory: Slapd) -> None:
    directory.add_person(JAMAL.email, JAMAL.name)
    group = directory.add_group(f"cn=wiki,{GROUPS}")
    agent = LdapAgent.from_config(directory.agent_config())
    with pytest.raises(Refused, match="no group cn=absent"):
        agent.add(JAMAL, f"cn=absent,{GROUPS}")
    with pytest.raises(Refused, match="No directory entry .* has mail=nobody@example.test"):
        agent.add(Person("nobody@example.test", "Nobody"), group)
    wrong: dict[str, Any] = {**directory.agent_config(), "password_env": "GATEHOUSE_AGENT_TEST_WRONG_LDAP"}
    os.environ["GATEHOUSE_AGENT_TEST_WRONG_LDAP"] = "not the password"
    try:
        with pytest.raises(Refused, match="invalidCredentials"):
            LdapAgent.from_config(wrong).add(JAMAL, group)
    finally:
        del os.environ["GATEHOUSE_AGENT_TEST_WRONG_LDAP"]
    directory.stop()
    with pytest.raises(Unreachable):
        agent.add(JAMAL, group)
    directory.start()
    agent.add(JAMAL, group)  # back: the same call now works
    assert directory.members(group) == {directory.person_dn(JAMAL.email).lower()}


@pytest.fixture
def scim(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScimServer]:
    with ScimServer() as server:
        monkeypatch.setenv("GATEHOUSE_AGENT_TEST_SCIM_TOKEN", server.token)
        yield server


SCIM_JAMAL = Person("jamal.carter@example.com", "Jamal Carter")  # scim2-models validates emails: no .test


def test_scim_patches_group_members_idempotently(scim: ScimServer) -> None:
    user_id = scim.add_user(SCIM_JAMAL.email, SCIM_JAMAL.name)
    other = scim.add_user("bea@example.com", "Bea")
    group = scim.add_group("aws-production", members=[other])
    agent = ScimAgent.from_config(scim.agent_config())
    assert "serves Users and Groups" in agent.check()
    agent.add(SCIM_JAMAL, group)
    agent.add(SCIM_JAMAL, group)
    assert scim.members(group) == {user_id, other} == agent.members(group)
    assert agent.member_name(SCIM_JAMAL) == user_id
    agent.remove(SCIM_JAMAL, group)
    agent.remove(SCIM_JAMAL, group)
    assert scim.members(group) == {other} == agent.members(group)


def test_scim_refusals_and_an_unreachable_server(scim: ScimServer, monkeypatch: pytest.MonkeyPatch) -> None:
    scim.add_user(SCIM_JAMAL.email, SCIM_JAMAL.name)
    group = scim.add_group("wiki")
    agent = ScimAgent.from_config(scim.agent_config())
    with pytest.raises(Refused, match="404"):
        agent.add(SCIM_JAMAL, "no-such-group")
    with pytest.raises(Refused, match="no user matching"):
        agent.add(Person("nobody@example.com", "Nobody"), group)
    monkeypatch.setenv("GATEHOUSE_AGENT_TEST_SCIM_TOKEN", "a wrong token")
    with pytest.raises(Refused, match="401"):
        agent.add(SCIM_JAMAL, group)
    monkeypatch.setenv("GATEHOUSE_AGENT_TEST_SCIM_TOKEN", scim.token)
    with pytest.raises(Unreachable, match="did not answer"):
        ScimAgent.from_config({**scim.agent_config(), "url": f"http://127.0.0.1:{free_port()}"}).add(SCIM_JAMAL, group)
    assert scim.members(group) == set(), "nothing half-applied"


def test_the_webhook_signs_each_change_and_retries_only_what_may_work(
        webhook_server: HttpReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEHOUSE_AGENT_TEST_WEBHOOK_SECRET", "whsec-test")
    agent = WebhookAgent.from_config({"url": webhook_server.url, "secret_env": "GATEHOUSE_AGENT_TEST_WEBHOOK_SECRET"})
    ends = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)
    change = Change(grant_id=7, resource="aws-production", ends_at=ends, key="grant-7-add")
    agent.add(JAMAL, "admins", change)
    [post] = webhook_server.received
    assert post.body == {"action": "grant", "person": {"email": JAMAL.email, "name": JAMAL.name},
                         "target": "admins", "resource": "aws-production", "grant_id": 7,
                         "ends_at": "2026-12-02T14:00:00+00:00", "key": "grant-7-add"}
    timestamp = post.headers["X-Gatehouse-Timestamp"]
    expected = hmac.new(b"whsec-test", timestamp.encode() + b"." + post.raw, hashlib.sha256).hexdigest()
    assert post.headers["X-Gatehouse-Signature"] == f"sha256={expected}"
    assert post.headers["Idempotency-Key"] == "grant-7-add"
    assert verify("whsec-test", timestamp, post.raw, post.headers["X-Gatehouse-Signature"])
    assert not verify("whsec-test", timestamp, post.raw + b" ", post.headers["X-Gatehouse-Signature"])
    assert not verify("whsec-test", str(int(timestamp) - 3600), post.raw, post.headers["X-Gatehouse-Signature"])

    webhook_server.fail_first, webhook_server.failure_status = 2, 409  # "already so" is done
    agent.remove(JAMAL, "admins", Change(7, "aws-production", ends, "grant-7-remove"))
    for status, error in ((503, Unreachable), (429, Unreachable), (400, Refused), (401, Refused)):
        webhook_server.attempts.clear()
        webhook_server.fail_first, webhook_server.failure_status = 1, status
        with pytest.raises(error, match=str(status)):
            agent.remove(JAMAL, "admins", Change(7, "aws-production", ends, "grant-7-remove"))
    with pytest.raises(Unreachable, match="did not answer"):
        WebhookAgent.from_config({"url": f"http://127.0.0.1:{free_port()}/hook",
                                  "secret_env": "GATEHOUSE_AGENT_TEST_WEBHOOK_SECRET"}).add(JAMAL, "admins", change)
    with pytest.raises(Refused, match="GATEHOUSE_AGENT_TEST_NO_SECRET"):
        WebhookAgent.from_config({"url": webhook_server.url, "secret_env": "GATEHOUSE_AGENT_TEST_NO_SECRET"}).add(JAMAL, "x")
    with pytest.raises(Refused, match="no signing secret"):
        WebhookAgent.from_config({"url": webhook_server.url}).check()
    assert "answers" in agent.check()


def test_removing_someone_with_no_account_is_done_but_a_missing_group_is_not(pg_roles: dict[str, str],
                                                                             directory: Slapd,
                                                                             scim: ScimServer) -> None:
    """A person without an account cannot be a member: the removal has nothing to undo (an add
    that was refused for that reason must not leave its grant's removal stuck)."""
    nobody = Person("nobody.here@example.com", "Nobody")
    PostgresAgent.from_config(PG_SERVER).remove(nobody, pg_roles["group"])
    with pytest.raises(Refused, match="no role 'gh_absent'"):
        PostgresAgent.from_config(PG_SERVER).remove(nobody, "gh_absent")
    group = directory.add_group(f"cn=wiki,{GROUPS}")
    LdapAgent.from_config(directory.agent_config()).remove(nobody, group)
    with pytest.raises(Refused, match="no group"):
        LdapAgent.from_config(directory.agent_config()).remove(nobody, f"cn=absent,{GROUPS}")
    scim_group = scim.add_group("wiki")
    ScimAgent.from_config(scim.agent_config()).remove(nobody, scim_group)


def test_agents_connect_only_to_allowed_hosts() -> None:
    saved = reach.policy()
    reach.configure("127.0.0.1, db.internal, 10.0.0.0/8")
    try:
        assert agent_for("postgres", {"host": "10.2.3.4"}).host == "10.2.3.4"
        assert agent_for("ldap", {"url": "ldap://DB.internal.:389"}).host == "db.internal."  # allowed: one name
        for kind, config in (("postgres", {"host": "192.168.1.1"}), ("ldap", {"url": "ldap://elsewhere.example"}),
                             ("scim", {"url": "http://[::1]:8080/scim"}),
                             ("webhook", {"url": "https://hooks.example/x"})):
            with pytest.raises(Refused, match="not in AGENT_ALLOWED_HOSTS"):
                agent_for(kind, config)
    finally:
        reach._current[0] = saved


def test_an_agent_never_reads_the_apps_own_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings may only point at GATEHOUSE_AGENT_* variables and files in AGENT_SECRETS_DIR:
    a webhook aimed at some receiver can never be sent SECRET_KEY or DATABASE_URL."""
    monkeypatch.setenv("SECRET_KEY", "the app's own secret")
    with pytest.raises(Refused, match="GATEHOUSE_AGENT_"):
        SecretRef(env="SECRET_KEY").read()
    inside, outside = tmp_path / "secrets", tmp_path / "elsewhere"
    inside.mkdir(), outside.mkdir()
    (inside / "ldap").write_text("directory-secret\n")
    (outside / "db").write_text("not for agents\n")
    saved = reach.secrets_dir()
    reach.configure("*", inside)
    try:
        assert SecretRef(file=str(inside / "ldap")).read() == "directory-secret"
        for path in (outside / "db", inside / ".." / "elsewhere" / "db"):
            with pytest.raises(Refused, match="AGENT_SECRETS_DIR"):
                SecretRef(file=str(path)).read()
    finally:
        reach.configure("127.0.0.1,::1,localhost", saved)
