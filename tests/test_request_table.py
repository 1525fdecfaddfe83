"""The requests table (/requests) and the dashboard (/): sorting, filters, paging,
visibility per role, row actions, fragments and JSON, lenient query strings, counters."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from support.web import as_role, unmasked
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    Agent,
    Approval,
    DriftFinding,
    ErrorRecord,
    Grant,
    Resource,
    ResourceApprover,
    User,
    utcnow,
)
from webapp.services import request_table

JSON = {"Accept": "application/json"}
HOUR = 3600
BASE = utcnow() - timedelta(days=10)


def add_request(database: Database, requester: User, resource_id: int, *, status: str = "requested",
                hours: float = 0, updated_hours: float | None = None, duration: int | None = HOUR,
                reason: str = "Needed for the quarterly audit.", decided_at: datetime | None = None) -> int:
    with database.session() as session:
        request = AccessRequest(
            requester_id=requester.id, resource_id=resource_id, reason=reason, duration_seconds=duration,  # type: ignore[arg-type]
            status=status, workflow_id=f"test-{uuid.uuid4().hex}", created_at=BASE + timedelta(hours=hours),
            updated_at=BASE + timedelta(hours=hours if updated_hours is None else updated_hours), decided_at=decided_at)
        session.add(request)
        session.flush()
        return request.id  # type: ignore[return-value]


@pytest.fixture
def resources(database: Database, people: dict[str, User]) -> dict[str, int]:
    """alpha-db (approver), beta-app (approver2), gamma-vpn (both)."""
    approvers = {"alpha-db": ["approver"], "beta-app": ["approver2"], "gamma-vpn": ["approver", "approver2"]}
    ids = {}
    with database.session() as session:
        for name, who in approvers.items():
            resource = Resource(name=name)
            session.add(resource)
            session.flush()
            for key in who:
                session.add(ResourceApprover(resource_id=resource.id, user_id=people[key].id))  # type: ignore[arg-type]
            ids[name] = resource.id
    return ids  # type: ignore[return-value]


@pytest.fixture
def table(database: Database, people: dict[str, User], resources: dict[str, int]) -> dict[int, dict[str, Any]]:
    """Six requests with distinct or deliberately tied values in every column."""
    specs = [
        ("member", "beta-app", "approved", 1, 50, 7 * 24 * HOUR, "Reconcile the ledger before quarter end."),
        ("approver", "alpha-db", "rejected", 2, 10, HOUR, "Investigate the slow query in production."),
        ("member", "gamma-vpn", "requested", 3, 3, None, "Working from the Lisbon office next week."),
        ("approver2", "alpha-db", "expired", 4, 40, 8 * HOUR, "Backfill 100% of the events table."),
        ("admin", "beta-app", "canceled", 5, 20, 30 * 24 * HOUR, "Rotate the deploy keys."),
        ("member", "alpha-db", "requested", 6, 6, HOUR, "Debug the nightly export job."),
    ]
    rows = {}
    for who, resource, status, hours, updated, duration, reason in specs:
        request_id = add_request(database, people[who], resources[resource], status=status, hours=hours,
                                 updated_hours=updated, duration=duration, reason=reason)
        rows[request_id] = {"requester": people[who].name, "resource": resource, "status": status,
                            "created": hours, "updated": updated, "duration": duration, "reason": reason,
                            "requester_key": who}
    return rows


def ids(client: TestClient, query: str = "") -> list[int]:
    response = client.get(f"/requests{query}", headers=JSON)
    assert response.status_code == 200, response.text
    return [row["id"] for row in response.json()["rows"]]


def expected(rows: dict[int, dict[str, Any]], column: str, order: str) -> list[int]:
    def key(request_id: int) -> tuple[Any, int]:
        if column == "id":
            return (request_id, request_id)
        value = rows[request_id][column]
        if column == "duration" and value is None:
            value = float("inf")  # permanent is the longest
        return (value, request_id)

    return sorted(rows, key=key, reverse=order == "desc")


# Sorting -------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["asc", "desc"])
@pytest.mark.parametrize("column", ["id", "requester", "resource", "status", "duration", "created", "updated"])
def test_sorts_by_each_column(client: TestClient, database: Database, people, table, column: str, order: str) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    assert ids(client, f"?sort={column}&order={order}") == expected(table, column, order)
    html = client.get(f"/requests?sort={column}&order={order}").text
    sorted_heading = re.findall(r'<th scope="col" aria-sort="(\w+)"[^>]*><a id="sort-(\w+)"', html)
    assert sorted_heading == [("ascending" if order == "asc" else "descending", column)]


def test_default_order_is_newest_first_and_headings_toggle(client: TestClient, database: Database, people, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    assert ids(client) == expected(table, "created", "desc")
    html = client.get("/requests").text
    # The sorted column's link flips the order; another column's link starts with its natural order.
    assert 'id="sort-created" href="/requests?sort=created&amp;order=asc"' in html
    assert 'id="sort-requester" href="/requests?sort=requester&amp;order=asc"' in html
    assert 'id="sort-updated" href="/requests?sort=updated&amp;order=desc"' in html


# Filters -------------------------------------------------------------------------------------

def matching(rows: dict[int, dict[str, Any]], test: Any) -> list[int]:
    return sorted((i for i, row in rows.items() if test(row)), key=lambda i: rows[i]["created"], reverse=True)


@pytest.mark.parametrize(("query", "test"), [
    ("?status=requested", lambda r: r["status"] == "requested"),
    ("?requester=mo+member", lambda r: r["requester_key"] == "member"),
    ("?requester=approver2%40example", lambda r: r["requester_key"] == "approver2"),
    ("?q=ledger", lambda r: "ledger" in r["reason"]),
    ("?q=BEA", lambda r: r["requester_key"] == "approver2"),  # a requester's name, any case
    ("?q=gamma", lambda r: r["resource"] == "gamma-vpn"),  # a resource's name
    ("?q=100%25", lambda r: "100%" in r["reason"]),  # % is a character, not a wildcard
    ("?q=_", lambda r: False),  # and so is _
    ("?status=requested&requester=member&q=export", lambda r: r["status"] == "requested" and "export" in r["reason"]),
])
def test_filters(client: TestClient, database: Database, people, table, query: str, test: Any) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    assert ids(client, query) == matching(table, test)


def test_resource_filter(client: TestClient, database: Database, people, resources, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    assert ids(client, f"?resource={resources['alpha-db']}") == matching(table, lambda r: r["resource"] == "alpha-db")


def test_filter_form_is_a_labelled_get_form_keeping_the_order(client: TestClient, database: Database, people, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    html = client.get("/requests?sort=status&order=asc&status=requested&q=%3Cb%3E").text
    form = re.search(r'<form id="request-filters" method="get" action="/requests".*?</form>', html, re.S)
    assert form is not None
    for name, label in (("status", "Status"), ("resource", "Resource"), ("requester", "Requester"), ("q", "Search")):
        assert f'<label for="{name}">{label}</label>' in form[0] and f'id="{name}" name="{name}"' in form[0]
    assert '<input type="hidden" name="sort" value="status"><input type="hidden" name="order" value="asc">' in form[0]
    assert '<option value="requested" selected>' in form[0]
    assert 'value="&lt;b&gt;"' in form[0]  # echoed, escaped


# Paging --------------------------------------------------------------------------------------

@pytest.fixture
def many(database: Database, people: dict[str, User], resources: dict[str, int]) -> list[int]:
    """60 requests, newest last."""
    return [add_request(database, people["member"], resources["alpha-db"], status="approved", hours=n)
            for n in range(60)]


def test_pages_follow_each_other_without_overlap(client: TestClient, database: Database, people, many) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    size = request_table.PAGE_SIZE
    seen: list[int] = []
    url = "/requests?sort=id&order=asc"
    pages = 0
    while url:
        body = client.get(url, headers=JSON).json()
        seen += [row["id"] for row in body["rows"]]
        assert body["paging"]["total"] == len(many) and not body["paging"]["total_capped"]
        url = body["paging"]["next"]
        pages += 1
    assert seen == sorted(many) and pages == -(-len(many) // size)
    second = client.get("/requests?sort=id&order=asc&page=2", headers=JSON).json()
    assert [row["id"] for row in second["rows"]] == sorted(many)[size:2 * size]
    assert second["paging"]["previous"] == "/requests?sort=id&order=asc"
    html = client.get("/requests?page=2").text
    assert 'rel="prev"' in html and 'rel="next"' in html and f"{size + 1} to {2 * size} of 60" in html


def test_the_total_is_capped(client: TestClient, database: Database, people, many, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(request_table, "COUNT_CAP", 30)
    as_role(client, database, people, "admin")
    first = client.get("/requests", headers=JSON).json()["paging"]
    assert first["total_capped"] and first["total"] == 30
    assert "1 to 25 of more than 30." in client.get("/requests").text
    last = client.get("/requests?page=3", headers=JSON).json()["paging"]  # the last page knows the total
    assert last["total"] == 60 and not last["total_capped"] and last["next"] is None


def test_a_page_past_the_end_is_empty_with_a_way_back(client: TestClient, database: Database, people, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    body = client.get("/requests?page=40", headers=JSON).json()
    assert body["rows"] == [] and body["paging"]["previous"] == "/requests?page=39"
    assert body["paging"]["total"] == len(table)
    assert "No requests to show." in client.get("/requests?page=40").text


# Visibility ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("role", "sees"), [
    ("member", lambda r: r["requester_key"] == "member"),
    # Their own, and those of alpha-db and gamma-vpn, which they approve.
    ("approver", lambda r: r["requester_key"] == "approver" or r["resource"] in ("alpha-db", "gamma-vpn")),
    ("approver2", lambda r: r["requester_key"] == "approver2" or r["resource"] in ("beta-app", "gamma-vpn")),
    ("admin", lambda r: True),
])
def test_each_role_sees_what_it_may(client: TestClient, database: Database, people, table, role: str, sees: Any) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, role)
    assert ids(client) == matching(table, sees)
    # A filter narrows what one may see; it never widens it.
    assert ids(client, "?requester=approver2") == matching(table, lambda r: sees(r) and r["requester_key"] == "approver2")


def test_signed_out_gets_no_rows(client: TestClient, table) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/requests", headers=JSON).status_code == 401
    assert client.get("/requests", follow_redirects=False).headers["location"].startswith("/login?next=")


# Row actions ---------------------------------------------------------------------------------

def row_html(html: str, request_id: int) -> str:
    match = re.search(rf'<tr id="request-row-{request_id}" class="status-(\w+)"[^>]*>.*?</tr>', html, re.S)
    assert match is not None, f"no row {request_id}"
    return match[0]


def actions(client: TestClient, request_id: int) -> set[str]:
    row = row_html(unmasked(client.get("/requests").text), request_id)
    return set(re.findall(rf'<form method="post" action="/requests/{request_id}/(\w+)"', row))


def test_actions_only_where_the_viewer_may_use_them(client: TestClient, database: Database, people, resources) -> None:  # type: ignore[no-untyped-def]
    members_alpha = add_request(database, people["member"], resources["alpha-db"], hours=1)
    members_beta = add_request(database, people["member"], resources["beta-app"], hours=2)
    approvers_own = add_request(database, people["approver"], resources["alpha-db"], hours=3)
    decided = add_request(database, people["member"], resources["gamma-vpn"], status="approved", hours=4)
    already = add_request(database, people["approver2"], resources["gamma-vpn"], hours=5)
    with database.session() as session:  # the approver counted an approval already (one of two needed)
        session.add(Approval(request_id=already, approver_id=people["approver"].id, decision="approve"))

    as_role(client, database, people, "member")
    assert actions(client, members_alpha) == {"cancel"}
    assert actions(client, decided) == set()

    as_role(client, database, people, "approver")
    assert actions(client, members_alpha) == {"approve", "reject"}
    assert actions(client, approvers_own) == {"cancel"}  # never decide on one's own request
    assert actions(client, decided) == set()  # not pending any more
    assert actions(client, already) == set()  # approved once, not twice
    assert members_beta not in ids(client)  # not theirs to see

    as_role(client, database, people, "approver2")
    assert actions(client, already) == {"cancel"}
    assert actions(client, members_beta) == {"approve", "reject"}

    as_role(client, database, people, "admin")  # admins decide on any request but their own
    assert actions(client, members_beta) == {"approve", "reject"}
    body = client.get("/requests", headers=JSON).json()
    by_id = {row["id"]: row["actions"] for row in body["rows"]}
    assert by_id[members_beta] == {"approve": True, "reject": True, "cancel": False, "again": False}
    assert by_id[decided] == {"approve": False, "reject": False, "cancel": False, "again": False}


def test_action_forms_are_real_forms_for_the_decision_routes(client: TestClient, database: Database, people, resources) -> None:  # type: ignore[no-untyped-def]
    request_id = add_request(database, people["member"], resources["alpha-db"])
    as_role(client, database, people, "approver")
    row = row_html(unmasked(client.get("/requests").text), request_id)
    assert row.count(f'<input type="hidden" name="csrf_token" value="{client.cookies["gh_csrf"]}">') == 2
    assert f'<label for="reject-reason-{request_id}">Reason<span class="visually-hidden"> for rejecting request #{request_id}</span></label>' in row
    assert f'<input id="reject-reason-{request_id}" name="comment" required minlength="3"' in row
    assert 'class="badge badge-requested">requested</span>' in row  # status as text, not only colour
    # The fields are the ones the decision routes read.
    from webapp.web.requests.forms import DecisionForm, RejectForm
    assert set(RejectForm.model_fields) == {"comment"} and set(DecisionForm.model_fields) == {"comment"}


# Fragments, JSON, lenient queries -------------------------------------------------------------

def test_htmx_gets_the_table_fragment_only(client: TestClient, database: Database, people, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    page = client.get("/requests?sort=status")
    fragment = client.get("/requests?sort=status", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="requests-table"') and "<html" not in fragment.text
    assert unmasked(fragment.text).strip() in unmasked(page.text)
    assert "HX-Request" in fragment.headers["vary"] and "HX-Request" in page.headers["vary"]
    assert unmasked(client.get("/requests?sort=status&fragment=1").text) == unmasked(fragment.text)
    # Boosted navigation and htmx history restores want the whole page.
    assert "<html" in client.get("/requests", headers={"HX-Request": "true", "HX-Boosted": "true"}).text
    restore = {"HX-Request": "true", "HX-History-Restore-Request": "true"}
    assert "<html" in client.get("/requests", headers=restore).text


def test_sort_and_page_links_work_with_and_without_htmx(client: TestClient, database: Database, people, many) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    html = client.get("/requests").text
    for link_id in ("sort-requester", "page-next"):
        link = re.search(rf'<a id="{link_id}" href="([^"]+)"([^>]*)>', html)
        assert link is not None
        assert f'hx-get="{link[1]}"' in link[2] and 'hx-target="#requests-table"' in link[2]
        assert 'hx-push-url="true"' in link[2]
    assert '<caption>Access requests, sorted by Created, descending: 1 to 25 of 60.</caption>' in html
    assert '<nav aria-label="Pages of requests"' in html


def test_json_shape(client: TestClient, database: Database, people, table) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "member")
    body = client.get("/requests?sort=duration&order=desc", headers=JSON).json()
    assert set(body) == {"rows", "paging"}
    first = body["rows"][0]
    assert set(first) == {"id", "url", "requester_id", "requester", "requester_email", "resource_id", "resource",
                          "reason", "status", "duration", "duration_seconds", "created_at", "updated_at",
                          "pending_until", "decision_note", "actions"}
    assert set(first["actions"]) == {"approve", "reject", "cancel", "again"}
    # One shape for a request in every list: My requests answers the same rows.
    mine = client.get("/my/requests", headers=JSON).json()
    assert mine and all(set(row) == set(first) for row in mine)
    assert {row["id"]: row for row in mine}[first["id"]] == first
    assert first["duration"] == "permanent" and first["duration_seconds"] is None
    assert first["url"] == f"/requests/{first['id']}" and first["requester_email"] == "member@example.com"
    assert body["paging"] == {"page": 1, "page_size": request_table.PAGE_SIZE, "sort": "duration", "order": "desc",
                              "has_previous": False, "has_next": False, "previous": None, "next": None,
                              "total": 3, "total_capped": False}


@pytest.mark.parametrize("query", [
    "?sort=nope", "?order=sideways", "?sort=requester;drop", "?status=bogus", "?status=", "?page=0", "?page=-3",
    "?page=99999999999999999999", "?page=abc", "?page=1e3", "?page=NaN", "?resource=abc", "?resource=0",
    "?resource=99999999999999", "?q=" + "x" * 500, "?requester=a%00b", "?sort[]=id", "?page=1&page=x",
    "?order=&sort=", "?q=%F0%9D%94%8A&sort=%00",
])
def test_bad_query_values_fall_back_to_defaults(client: TestClient, database: Database, people, table, query: str) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "admin")
    for headers in ({}, {"HX-Request": "true"}):
        assert client.get(f"/requests{query}", headers=headers).status_code == 200
    response = client.get(f"/requests{query}", headers=JSON)
    assert response.status_code == 200
    rows = [row["id"] for row in response.json()["rows"]]
    assert rows == expected(table, "created", "desc") or query.startswith("?q=%F0")  # a valid, matchless search


# Dashboard and counters ------------------------------------------------------------------------

def test_counters_count_what_each_viewer_may_see(client: TestClient, database: Database, people, resources) -> None:  # type: ignore[no-untyped-def]
    now = utcnow()
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    member, approver2 = people["member"], people["approver2"]
    mine = add_request(database, member, resources["alpha-db"])  # pending
    add_request(database, approver2, resources["beta-app"])  # pending, not the member's
    add_request(database, member, resources["alpha-db"], status="approved", decided_at=now)
    add_request(database, approver2, resources["beta-app"], status="revoked", decided_at=now)  # approved, then ended
    add_request(database, member, resources["alpha-db"], status="approved", decided_at=midnight - timedelta(hours=1))
    add_request(database, member, resources["alpha-db"], status="rejected", decided_at=now)
    with database.session() as session:
        for user, resource, expires, revoked in [
            (member, "alpha-db", now + timedelta(hours=2), None),  # expiring soon
            (approver2, "beta-app", now + timedelta(hours=23), None),  # expiring soon, not the member's
            (member, "alpha-db", now + timedelta(hours=48), None),  # later
            (member, "alpha-db", now + timedelta(hours=2), now),  # already revoked
            (member, "alpha-db", now - timedelta(hours=1), None),  # already over
            (member, "alpha-db", None, None),  # permanent
        ]:
            session.add(Grant(user_id=user.id, resource_id=resources[resource], expires_at=expires, revoked_at=revoked))
        session.add(ErrorRecord(source="test", request_id=mine, at=now - timedelta(hours=1)))
        session.add(ErrorRecord(source="test", request_id=mine, at=now - timedelta(hours=30)))  # too old
        session.add(ErrorRecord(source="test", request_id=None, at=now - timedelta(minutes=5)))  # not tied to a request
        agent = Agent(name="directory", kind="ldap", settings={})
        session.add(agent)
        session.flush()
        for member_name, corrected in (("cn=stranger", False), ("cn=fixed", True)):  # only what still stands counts
            session.add(DriftFinding(agent_id=agent.id, resource_id=resources["alpha-db"], kind="extra",
                                     member=member_name, corrected=corrected))

    as_role(client, database, people, "admin")
    assert client.get("/dashboard/counters", headers=JSON).json() == {
        "pending": 2, "approved_today": 2, "expiring_soon": 2, "errors": 2, "drift": 1}
    as_role(client, database, people, "member")
    assert client.get("/dashboard/counters", headers=JSON).json() == {
        "pending": 1, "approved_today": 1, "expiring_soon": 1, "errors": 1, "drift": 0}
    fragment = client.get("/dashboard/counters")
    assert fragment.text.lstrip().startswith('<section id="counters"') and "<html" not in fragment.text
    assert '<span class="counter-value">1</span> <span class="counter-label">pending requests</span>' in fragment.text
    assert fragment.text.strip() in re.sub(r'name="form_key" value="\w+"', "", client.get("/").text)


def test_dashboard_shows_counters_the_first_page_and_the_request_form(client: TestClient, database: Database, people, many) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "member")
    html = client.get("/").text
    assert '<section id="counters"' in html and '<section id="requests-table"' in html
    shown = [int(i) for i in re.findall(r'<tr id="request-row-(\d+)"', html)]
    assert shown == sorted(many, reverse=True)[:request_table.PAGE_SIZE]
    assert 'hx-get="/requests' not in html.split('<section id="requests-table"')[1].split("</section>")[0]
    assert 'id="page-next" href="/requests?page=2" rel="next">' in html  # links lead to the full table
    assert '<form id="request-form" method="post" action="/requests"' in html
    assert '<a href="/requests">All requests</a>' in html  # in the navigation


def test_navigation_marks_the_table_page(client: TestClient, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    as_role(client, database, people, "member")
    assert '<li><a href="/requests" aria-current="page">All requests</a></li>' in client.get("/requests").text
