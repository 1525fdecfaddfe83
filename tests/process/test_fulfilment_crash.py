"""Crash test for fulfilment (issue 13): the app as a real process on PostgreSQL, killed with
SIGKILL at random moments while grants and removals run against a real OpenLDAP slapd and
real PostgreSQL roles.

Each round asks for access (auto-approved resources, so each request becomes a grant and an
add task at once) and revokes some grants that are on, over the JSON API, then kills the
process group at a random moment within the next second and a half and starts it again with
the same executor id. At the end, with every task settled: each target's members are exactly
the holders of the active grants, every task is done (or cancelled, for an add whose grant
ended first), every acknowledged revoke ended its grant, and each grant's audit events exist
once.

FULFILMENT_CRASH_SEED picks the random moments and choices (a fixed default).
"""

from __future__ import annotations

import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.pg_roles import PG_SERVER, create_login, drop_role, group_role, members_of
from support.processes import AppProcess, app_env
from support.receivers import free_port
from support.slapd import GROUPS, Slapd, available
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Agent, AuditEvent, FulfilmentTask, Grant, Resource, User
from webapp.services.accounts import create_user

pytestmark = pytest.mark.slow

KILLS = 10
PEOPLE = 8
EXECUTOR_ID = "fulfilment-crash"


@pytest.fixture
def directory(tmp_path: Path) -> Iterator[Slapd]:
    if not available():
        pytest.skip("needs OpenLDAP's slapd (Debian package slapd; .ci/run installs it)")
    with Slapd(tmp_path) as running:
        yield running


def login_of(n: int, tag: str) -> str:
    return f"gh_crash_{tag}_person{n}"  # the agent's login template over person<n>@example.test


def test_kill_9_during_grants_and_removals_leaves_each_target_exact(pg_settings: Settings, database: Database,
                                                                    directory: Slapd, tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("FULFILMENT_CRASH_SEED", "20261130")))
    tag = uuid.uuid4().hex[:6]
    group_dn = directory.add_group(f"cn=crash-{tag},{GROUPS}")
    with group_role("gh_crash") as pg_group:
        people, tokens, dns, admin_token, resources = _arrange(database, directory, tag, group_dn, pg_group)
        logins = {pid: login_of(n, tag) for n, pid in enumerate(people)}
        try:
            _run(pg_settings, database, directory, tmp_path, rng, people, tokens, admin_token, resources)
            _check(database, directory, group_dn, pg_group, resources, dns, logins)
        finally:
            for login in logins.values():
                drop_role(login)


def _arrange(database: Database, directory: Slapd, tag: str, group_dn: str,
             pg_group: str) -> tuple[list[int], dict[int, str], dict[int, str], str, dict[str, int]]:
    """People (each in the directory and with a PostgreSQL login), their tokens, and two
    auto-approved resources: one on the LDAP agent, one on the PostgreSQL agent."""
    with database.session() as session:
        admin = create_user(session, email="root@example.test", name="Ria Root", password=None, role="admin")
        _, admin_token = personal_token(session, admin, name="crash")
        people, tokens, dns = [], {}, {}
        for n in range(PEOPLE):
            email = f"person{n}@example.test"
            person = create_user(session, email=email, name=f"Person {n}", password=None, role="member")
            _, tokens[person.id] = personal_token(session, person, name="crash")
            dns[person.id] = directory.add_person(email, f"Person {n}").lower()
            create_login(login_of(n, tag))
            people.append(person.id)
        ldap_agent = Agent(name="directory", kind="ldap",
                           settings={**directory.agent_config(), "password_env": "GATEHOUSE_AGENT_CRASH_LDAP"})
        pg_agent = Agent(name="warehouse", kind="postgres",
                         settings={**PG_SERVER, "login_template": f"gh_crash_{tag}_{{local}}"})
        session.add_all([ldap_agent, pg_agent])
        session.flush()
        resources = {}
        for name, agent, target in (("wiki", ldap_agent, group_dn), ("warehouse", pg_agent, pg_group)):
            resource = Resource(name=name, kind="app", auto_approve=True, agent_id=agent.id, target=target)
            session.add(resource)
            session.flush()
            resources[name] = resource.id  # type: ignore[assignment]
        return people, tokens, dns, admin_token, resources  # type: ignore[return-value]


def _run(settings: Settings, database: Database, directory: Slapd, tmp_path: Path, rng: random.Random,
         people: list[int], tokens: dict[int, str], admin_token: str, resources: dict[str, int]) -> None:
    port = free_port()
    env = app_env(settings, EXECUTOR_ID=EXECUTOR_ID, APP_VERSION="fulfilment-crash", SUBMIT_RATE_LIMIT="100000",
                  BASE_URL=f"http://127.0.0.1:{port}", GATEHOUSE_AGENT_CRASH_LDAP=directory.password,
                  AGENT_RETRY_FIRST_SECONDS="0.2", AGENT_RETRY_MAX_SECONDS="1")
    acknowledged_revokes: list[int] = []
    with (tmp_path / "app.log").open("w") as log:
        app = AppProcess(env, log, port=port, cwd=tmp_path)
        app.start()
        try:
            for _round in range(KILLS):
                _one_round(app, database, rng, people, tokens, admin_token, resources, acknowledged_revokes)
                time.sleep(rng.uniform(0.0, 1.5))  # grants and removals are running now
                app.kill()
                app.start()
            try:
                wait_for(lambda: _all_settled(database), timeout=90, what="every task settled")
            except AssertionError:
                raise AssertionError(f"not settled: {_unsettled(database)}") from None
        finally:
            app.stop()
    with database.session() as session:
        ended = set(session.scalars(sa.select(Grant.id).where(Grant.revoked_at.is_not(None))))  # type: ignore[union-attr]
    assert set(acknowledged_revokes) <= ended, "every acknowledged revoke ended its grant"
    assert acknowledged_revokes, "the rounds revoked something"


def _one_round(app: AppProcess, database: Database, rng: random.Random, people: list[int], tokens: dict[int, str],
               admin_token: str, resources: dict[str, int], acknowledged_revokes: list[int]) -> None:
    """Ask for what a person does not hold, and revoke some of what they do."""
    with database.session() as session:
        holding = {(g.user_id, g.resource_id): g.id for g in session.scalars(
            sa.select(Grant).where(Grant.revoked_at.is_(None)))}  # type: ignore[union-attr]
    for person in rng.sample(people, 4):
        for resource_id in resources.values():
            held = holding.get((person, resource_id))
            if held is None:
                response = app.http.post("/requests", data={
                    "resource_id": resource_id, "duration": "8h", "reason": "Crash test: fulfilment under kill -9.",
                    "form_key": uuid.uuid4().hex}, headers=_bearer(tokens[person]))
                assert response.status_code == 201, response.text
            elif rng.random() < 0.6:
                response = app.http.post(f"/grants/{held}/revoke", data={"note": "crash test"},
                                         headers=_bearer(admin_token))
                assert response.status_code == 200, response.text
                acknowledged_revokes.append(held)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def _all_settled(database: Database) -> bool:
    with database.session() as session:
        open_tasks = session.scalar(sa.select(sa.func.count()).select_from(FulfilmentTask).where(
            FulfilmentTask.status.not_in(["done", "cancelled"]))) or 0  # type: ignore[attr-defined]
        in_flux = session.scalar(sa.select(sa.func.count()).select_from(Grant).where(
            Grant.state.in_(["provisioning", "ending"]))) or 0  # type: ignore[attr-defined]
    return open_tasks == 0 and in_flux == 0


def _unsettled(database: Database) -> list[tuple[object, ...]]:
    """What still waits, for the failure message."""
    with database.session() as session:
        return [tuple(row) for row in session.execute(
            sa.select(FulfilmentTask.id, FulfilmentTask.workflow_id, FulfilmentTask.status, FulfilmentTask.attempts,
                      FulfilmentTask.last_error, Grant.state)
            .join(Grant, Grant.id == FulfilmentTask.grant_id)
            .where(FulfilmentTask.status.not_in(["done", "cancelled"]) | Grant.state.in_(["provisioning", "ending"])))]  # type: ignore[attr-defined]


def _check(database: Database, directory: Slapd, group_dn: str, pg_group: str, resources: dict[str, int],
           dns: dict[int, str], logins: dict[int, str]) -> None:
    with database.session() as session:
        grants = list(session.scalars(sa.select(Grant)))
        tasks = list(session.scalars(sa.select(FulfilmentTask)))
        events = Counter(session.execute(sa.select(AuditEvent.action, AuditEvent.subject).where(
            AuditEvent.subject.like("grant:%"))).all())  # type: ignore[attr-defined]
        assert session.scalar(sa.select(sa.func.count()).select_from(User)) == PEOPLE + 1
    active = [g for g in grants if g.state == "active"]
    assert {dns[g.user_id] for g in active if g.resource_id == resources["wiki"]} == directory.members(group_dn)
    assert {logins[g.user_id] for g in active if g.resource_id == resources["warehouse"]} == members_of(pg_group)
    assert all(t.status in ("done", "cancelled") for t in tasks)
    assert all(g.state == ("removed" if g.revoked_at else "active") for g in grants)
    for grant in grants:
        subject = f"grant:{grant.id}"
        ended = 1 if grant.revoked_at else 0
        assert events[("grant.created", subject)] == 1, subject
        assert events[("grant.revoked", subject)] == ended == events[("grant.removed", subject)], subject
        assert events[("grant.active", subject)] == 1 or (ended and events[("grant.active", subject)] == 0), subject
    print(f"\nfulfilment crash: {len(grants)} grants, {len(tasks)} tasks, {len(active)} active at the end")

