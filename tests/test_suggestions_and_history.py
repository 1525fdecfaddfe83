"""Access suggestions on the request form (webapp/services/suggestions.py) and "who had access at
time T" on an admin's resource page (webapp/services/access_history.py)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.access import make_resource, submit
from support.waiting import wait_for
from support.web import post_form, sign_in
from webapp.app import create_app
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Approval, Grant, Resource, User, utcnow
from webapp.services.access_history import holders_at
from webapp.services.audit import record_event
from webapp.services.demo import PEOPLE, TEAM_ACCESS, email_for, seed_demo
from webapp.services.suggestions import suggestions_for

DAY = timedelta(days=1)


# Suggestions -------------------------------------------------------------------------------

def add_user(database: Database, name: str, department: str, title: str = "", *, active: bool = True) -> int:
    with database.session() as session:
        user = User(email=f"{name.lower()}@example.com", name=name, department=department, title=title, active=active)
        session.add(user)
        session.flush()
        return user.id  # type: ignore[return-value]


def add_resources(database: Database, *names: str) -> dict[str, int]:
    with database.session() as session:
        resources = [Resource(name=name) for name in names]
        session.add_all(resources)
        session.flush()
        return {r.name: r.id for r in resources}  # type: ignore[misc]


def grant(database: Database, user_id: int, resource_id: int, *, granted_at: datetime | None = None,
          expires_at: datetime | None = None, revoked_at: datetime | None = None, request_id: int | None = None,
          revoked_by_id: int | None = None) -> int:
    with database.session() as session:
        row = Grant(user_id=user_id, resource_id=resource_id, granted_at=granted_at or utcnow() - DAY,
                    expires_at=expires_at, revoked_at=revoked_at, request_id=request_id, revoked_by_id=revoked_by_id)
        session.add(row)
        session.flush()
        return row.id  # type: ignore[return-value]


def add_request(database: Database, requester_id: int, resource_id: int, status: str) -> int:
    with database.session() as session:
        row = AccessRequest(requester_id=requester_id, resource_id=resource_id, reason="arranged by the test",
                            status=status, workflow_id=f"test-{uuid.uuid4().hex}")
        session.add(row)
        session.flush()
        return row.id  # type: ignore[return-value]


def suggested(database: Database, user_id: int) -> list[tuple[str, int]]:
    with database.session() as session:
        return [(s.name, s.holders) for s in suggestions_for(session, user_id, now=utcnow())]


@pytest.fixture
def team(database: Database, people) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The member (Engineering, Software Engineer) and people like them, or not."""
    with database.session() as session:
        session.execute(sa.update(User).where(User.id == people["member"].id).values(title="Software Engineer"))
    return {
        "me": people["member"].id,
        "eng1": add_user(database, "Eng1", "Engineering", "Manager"),
        "eng2": add_user(database, "Eng2", "Engineering"),
        "eng3": add_user(database, "Eng3", "Engineering", "Tester"),
        "same_title": add_user(database, "Titled", "Sales", "Software Engineer"),
        "other": add_user(database, "Other", "Sales", "Account Executive"),
        "gone": add_user(database, "Gone", "Engineering", "Software Engineer", active=False),
    }


def test_suggestions_rank_by_distinct_holders_and_leave_out_what_does_not_count(
        database: Database, team: dict[str, int]) -> None:
    r = add_resources(database, "wiki", "ci", "crm", "old-db", "mine", "asked", "ghost", "dup", "renew", "refused")
    now = utcnow()
    for who in ("eng1", "eng2", "eng3"):
        grant(database, team[who], r["wiki"])  # 3 people in my department
    grant(database, team["eng1"], r["ci"])
    grant(database, team["same_title"], r["ci"], expires_at=now + DAY)  # same title, other department: counts
    grant(database, team["other"], r["crm"])  # other department, other title: does not count
    grant(database, team["eng1"], r["old-db"], revoked_at=now - timedelta(hours=1))
    grant(database, team["eng2"], r["old-db"], expires_at=now - timedelta(minutes=1))  # expired, not yet swept
    grant(database, team["eng1"], r["mine"])
    grant(database, team["me"], r["mine"])  # I hold it already
    grant(database, team["eng2"], r["asked"])
    add_request(database, team["me"], r["asked"], "requested")  # I am waiting for it
    grant(database, team["gone"], r["ghost"])  # held by someone no longer active
    grant(database, team["eng3"], r["dup"])
    grant(database, team["eng3"], r["dup"], granted_at=now - 2 * DAY)  # one person twice: one holder
    grant(database, team["eng2"], r["renew"])
    grant(database, team["me"], r["renew"], revoked_at=now - DAY)  # mine ended: suggest it again
    grant(database, team["eng1"], r["refused"])
    add_request(database, team["me"], r["refused"], "rejected")  # only a pending request hides one

    assert suggested(database, team["me"]) == [("wiki", 3), ("ci", 2), ("dup", 1), ("refused", 1), ("renew", 1)]


def test_suggestions_stop_at_five_and_need_a_department_or_title(database: Database, team: dict[str, int]) -> None:
    r = add_resources(database, *(f"app-{n}" for n in range(7)))
    for n in range(7):
        grant(database, team["eng1"], r[f"app-{n}"])
    assert [name for name, _ in suggested(database, team["me"])] == [f"app-{n}" for n in range(5)]

    # Nobody is "like" a person without a department or title, not even others without one.
    loner, blank = add_user(database, "Loner", ""), add_user(database, "Blank", "")
    grant(database, blank, r["app-0"])
    assert suggested(database, loner) == []


def test_the_form_offers_suggestions_that_preselect_the_resource(
        client: TestClient, database: Database, team: dict[str, int]) -> None:
    r = add_resources(database, "wiki", "ci")
    grant(database, team["eng1"], r["wiki"])
    grant(database, team["eng2"], r["wiki"])
    grant(database, team["same_title"], r["ci"])
    sign_in(client, "member@example.com")

    for path in ("/requests/new", "/"):
        html = client.get(path).text
        assert "People like you have access to" in html
        links = re.findall(r'<li><a href="/requests/new\?resource_id=(\d+)">([^<]+)</a> <span class="hint">\(([^)]*)\)',
                           html)
        assert links == [(str(r["wiki"]), "wiki", "app, held by 2 of them"),
                         (str(r["ci"]), "ci", "app, held by 1 of them")], path

    # The link works without JavaScript: the form comes with that resource chosen.
    chosen = client.get(f"/requests/new?resource_id={r['ci']}").text
    assert re.search(rf'id="resource-{r["ci"]}" value="{r["ci"]}" required aria-describedby="[^"]+" checked>', chosen)
    assert not re.search(rf'id="resource-{r["wiki"]}" value="{r["wiki"]}" [^>]* checked>', chosen)

    # A refused submission re-renders the form, suggestions included.
    refused = post_form(client, "/requests", {"resource_id": r["ci"], "duration": "8h", "reason": "short",
                                              "form_key": uuid.uuid4().hex}, headers={"HX-Request": "true"})
    assert refused.status_code == 422
    assert refused.text.lstrip().startswith('<form id="request-form"') and "People like you" in refused.text


def test_no_suggestions_no_box(client: TestClient, database: Database, team: dict[str, int]) -> None:
    r = add_resources(database, "crm")
    grant(database, team["other"], r["crm"])
    sign_in(client, "member@example.com")
    for path in ("/requests/new", "/"):
        html = client.get(path).text
        assert 'id="request-form"' in html
        assert "People like you" not in html and 'class="suggestions"' not in html


def test_the_demo_organisation_has_suggestions_to_show(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        seed_demo(session)
    with database.session() as session:
        ids = dict(session.execute(sa.select(User.email, User.id)).all())
        now = utcnow()
        for department, resource in TEAM_ACCESS:
            newcomer = [name for name, dept, *_ in PEOPLE if dept == department][-1]
            offered = [s.name for s in suggestions_for(session, ids[email_for(newcomer)], now=now)]
            assert offered[:1] == [resource], (newcomer, offered)  # what the rest of the team holds comes first


# Who had access at time T ---------------------------------------------------------------------

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


@pytest.fixture
def history(database: Database, people) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One resource's grants around T0:
    alice  from T0, permanent, still on (auto-approved)
    bob    from T0+1h, revoked early at T0+3h by the admin, approved by both approvers
    carol  from T0+1h, expired at T0+2h and never swept (revoked_at empty)
    dave   from T0+1h, expired at T0+2h, revoked by the workflow a moment later
    (and alice on another resource, which must not show)."""
    r = add_resources(database, "vault", "elsewhere")
    alice, bob = add_user(database, "Alice", "Engineering"), add_user(database, "Bob", "Engineering")
    carol, dave = add_user(database, "Carol", "Data"), add_user(database, "Dave", "Data")
    alice_request = add_request(database, alice, r["vault"], "approved")
    bob_request = add_request(database, bob, r["vault"], "revoked")
    with database.session() as session:
        record_event(session, actor="workflow", action="request.auto_approved", subject=f"request:{alice_request}")
        session.add(Approval(request_id=bob_request, approver_id=people["approver"].id, decision="approve"))
        session.add(Approval(request_id=bob_request, approver_id=people["approver"].id, decision="approve",
                             counted=False))  # a repeated click: not an approval
        session.add(Approval(request_id=bob_request, approver_id=people["approver2"].id, decision="approve"))
    grants = {
        "alice": grant(database, alice, r["vault"], granted_at=T0, request_id=alice_request),
        "bob": grant(database, bob, r["vault"], granted_at=T0 + HOUR, revoked_at=T0 + 3 * HOUR,
                     revoked_by_id=people["admin"].id, request_id=bob_request),
        "carol": grant(database, carol, r["vault"], granted_at=T0 + HOUR, expires_at=T0 + 2 * HOUR),
        "dave": grant(database, dave, r["vault"], granted_at=T0 + HOUR, expires_at=T0 + 2 * HOUR,
                      revoked_at=T0 + 2 * HOUR + timedelta(seconds=2)),
    }
    grant(database, alice, r["elsewhere"], granted_at=T0 - DAY)
    return {"resource_id": r["vault"], "grants": grants, "requests": {"alice": alice_request, "bob": bob_request}}


def names_at(database: Database, resource_id: int, at: datetime) -> list[str]:
    with database.session() as session:
        return [h.name for h in holders_at(session, resource_id, at, now=utcnow()).holders]


@pytest.mark.parametrize(("moment", "expected"), [
    (T0 - timedelta(minutes=1), []),  # before any grant
    (T0, ["Alice"]),  # granted_at is inclusive
    (T0 + 90 * timedelta(minutes=1), ["Alice", "Bob", "Carol", "Dave"]),  # during
    (T0 + 2 * HOUR, ["Alice", "Bob"]),  # the expiry is exclusive, swept or not
    (T0 + 3 * HOUR - timedelta(seconds=1), ["Alice", "Bob"]),
    (T0 + 3 * HOUR, ["Alice"]),  # after the early revoke
    (T0 + 400 * DAY, ["Alice"]),  # permanent
])
def test_holders_at_each_moment(database: Database, history: dict[str, Any], moment: datetime,
                                expected: list[str]) -> None:
    assert names_at(database, history["resource_id"], moment) == expected


@pytest.fixture
def admin(client: TestClient, people) -> TestClient:  # type: ignore[no-untyped-def]
    sign_in(client, "admin@example.com")
    return client


def test_access_at_answers_in_json(admin: TestClient, history: dict[str, Any]) -> None:
    url = f"/admin/resources/{history['resource_id']}/access"
    answer = admin.get(url, params={"at": "2025-03-01T10:30"}, headers={"Accept": "application/json"})
    assert answer.status_code == 200
    body = answer.json()
    assert body["at"] == "2025-03-01T10:30:00+00:00" and body["more"] is False
    rows = {h["name"]: h for h in body["holders"]}
    assert list(rows) == ["Alice", "Bob", "Carol", "Dave"]
    assert rows["Alice"] | {"user_id": 0} == {
        "user_id": 0, "name": "Alice", "email": "alice@example.com", "grant_id": history["grants"]["alice"],
        "granted_at": "2025-03-01T09:00:00+00:00", "ended_at": None, "ended": "active", "revoked_by": None,
        "request_id": history["requests"]["alice"], "request_url": f"/requests/{history['requests']['alice']}",
        "approved_by": [], "auto_approved": True}
    assert (rows["Bob"]["ended"], rows["Bob"]["ended_at"], rows["Bob"]["revoked_by"]) == (
        "revoked", "2025-03-01T12:00:00+00:00", "Ada Admin")
    assert rows["Bob"]["approved_by"] == ["Arlo Approver", "Bea Approver"] and not rows["Bob"]["auto_approved"]
    for name in ("Carol", "Dave"):
        assert (rows[name]["ended"], rows[name]["ended_at"], rows[name]["revoked_by"]) == (
            "expired", "2025-03-01T11:00:00+00:00", None)
        assert rows[name]["request_id"] is None and rows[name]["approved_by"] == []

    # A zone in the value is honoured; without one the time is UTC, as on /audit.
    shifted = admin.get(url, params={"at": "2025-03-01T14:00+03:00"}, headers={"Accept": "application/json"}).json()
    assert shifted["at"] == "2025-03-01T11:00:00+00:00"
    assert [h["name"] for h in shifted["holders"]] == ["Alice", "Bob"]
    # No time asks about now.
    now = admin.get(url, headers={"Accept": "application/json"}).json()
    assert [h["name"] for h in now["holders"]] == ["Alice"]
    assert abs(datetime.fromisoformat(now["at"]) - utcnow()) < timedelta(minutes=1)


def test_access_at_as_fragment_and_page(admin: TestClient, history: dict[str, Any]) -> None:
    resource_id = history["resource_id"]
    page = admin.get(f"/admin/resources/{resource_id}")
    assert 'id="access-at-form"' in page.text and f'hx-get="/admin/resources/{resource_id}/access"' in page.text
    assert 'id="resource-access"' in page.text and 'type="datetime-local"' in page.text

    url = f"/admin/resources/{resource_id}/access?at=2025-03-01T10:30"
    fragment = admin.get(url, headers={"HX-Request": "true"})
    assert fragment.status_code == 200 and "<html" not in fragment.text
    assert fragment.text.lstrip().startswith('<div id="access-answer"><div class="table-scroll" tabindex="0">'
                                             '<table id="access-at-table">')
    assert "live-follow" not in fragment.text  # an answer about a past moment stands
    now = admin.get(f"/admin/resources/{resource_id}/access", headers={"HX-Request": "true"}).text
    assert f'hx-get="/admin/resources/{resource_id}/access" hx-trigger="sse:audit"' in now  # "now" is asked again
    assert "4 people had access at" in fragment.text
    assert f'href="/requests/{history["requests"]["bob"]}"' in fragment.text
    assert "Arlo Approver, Bea Approver" in fragment.text and "automatically" in fragment.text
    assert "by Ada Admin" in fragment.text and fragment.text.count(">expired<") == 2
    assert f'href="/admin/resources/{resource_id}/access?at=2025-03-01T10%3A30"' in fragment.text

    full = admin.get(url)
    assert full.status_code == 200 and full.text.startswith("<!doctype html>")
    assert "<h1>Who had access to vault</h1>" in full.text and 'value="2025-03-01T10:30"' in full.text
    assert fragment.text.strip() in full.text
    assert "Vary" in full.headers and "HX-Request" in full.headers["vary"]

    nobody = admin.get(f"/admin/resources/{resource_id}/access?at=2025-03-01T08:59", headers={"HX-Request": "true"})
    assert "0 people had access" in nobody.text and "Nobody had access at that time." in nobody.text


@pytest.mark.parametrize("bad", ["yesterday", "2025-13-01T10:00", "10:30", "2025-03-01T10:30\x00", "0001-01-01T00:00+05:00"])
def test_a_bad_time_is_a_400_that_says_why(admin: TestClient, history: dict[str, Any], bad: str) -> None:
    url = f"/admin/resources/{history['resource_id']}/access"
    as_json = admin.get(url, params={"at": bad}, headers={"Accept": "application/json"})
    assert as_json.status_code == 400
    assert as_json.json()["error"].startswith("Enter a") and as_json.json()["fields"]["at"]
    fragment = admin.get(url, params={"at": bad}, headers={"HX-Request": "true"})
    assert fragment.status_code == 400 and "<html" not in fragment.text
    assert 'role="alert"' in fragment.text and "Enter a" in fragment.text
    page = admin.get(url, params={"at": bad})
    assert page.status_code == 400 and 'aria-invalid="true"' in page.text and "Enter a" in page.text


def test_access_at_is_for_admins_only(client: TestClient, database: Database, history: dict[str, Any]) -> None:
    sign_in(client, "approver@example.com")
    response = client.get(f"/admin/resources/{history['resource_id']}/access", headers={"Accept": "application/json"})
    assert response.status_code == 403
    sign_in(client, "admin@example.com")
    assert client.get("/admin/resources/999999/access", headers={"Accept": "application/json"}).status_code == 404


# The same answers for grants made and ended by the real workflow ----------------------------------

@pytest.fixture
def browsers(settings, people) -> Iterator[dict[str, TestClient]]:  # type: ignore[no-untyped-def]
    app = create_app(settings)
    with TestClient(app) as member:
        approver, admin_ = TestClient(app), TestClient(app)
        sign_in(member, "member@example.com")
        sign_in(approver, "approver@example.com")
        sign_in(admin_, "admin@example.com")
        yield {"member": member, "approver": approver, "admin": admin_}


def test_access_at_follows_a_real_request(browsers: dict[str, TestClient], database: Database, people) -> None:  # type: ignore[no-untyped-def]
    resource_id = make_resource(database, people)
    before = utcnow()
    request_id = submit(browsers["member"], resource_id, "7d")
    assert post_form(browsers["approver"], f"/requests/{request_id}/approve").status_code == 303

    def granted() -> tuple[int, datetime] | None:
        with database.session() as session:
            row = session.execute(sa.select(Grant.id, Grant.granted_at).where(Grant.request_id == request_id)).first()
            return None if row is None else (row[0], row[1])

    grant_id, granted_at = wait_for(granted, what="the grant")

    def ask(at: datetime) -> list[dict[str, Any]]:
        response = browsers["admin"].get(f"/admin/resources/{resource_id}/access", params={"at": at.isoformat()},
                                         headers={"Accept": "application/json"})
        assert response.status_code == 200, response.text
        return response.json()["holders"]  # type: ignore[no-any-return]

    assert ask(before) == []
    during = ask(granted_at)
    assert [(h["name"], h["ended"], h["request_id"], h["approved_by"]) for h in during] == [
        ("Mo Member", "active", request_id, ["Arlo Approver"])]

    assert post_form(browsers["admin"], f"/grants/{grant_id}/revoke", {"note": "done"}).status_code == 303
    with database.session() as session:  # the revoke route answers once the revoke is done
        revoked_at = session.scalar(sa.select(Grant.revoked_at).where(Grant.id == grant_id))
    assert revoked_at is not None
    assert ask(revoked_at - timedelta(microseconds=1))[0]["ended"] == "revoked"
    assert ask(revoked_at - timedelta(microseconds=1))[0]["revoked_by"] == "Ada Admin"
    assert ask(revoked_at) == []
