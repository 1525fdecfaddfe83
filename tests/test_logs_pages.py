"""/errors and /audit for admins: filters, keyset paging, JSON, and the streamed CSV export."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from starlette.testclient import TestClient

from support.web import csrf_token, sign_in
from webapp.core.db import Database
from webapp.core.models import AuditEvent, ErrorRecord, utcnow
from webapp.services.logs import EXPORT_BATCH, PAGE_SIZE

JSON = {"Accept": "application/json"}


def admin(client: TestClient) -> TestClient:
    sign_in(client, "admin@example.com")
    return client


def test_errors_filter_by_source_and_page_by_id(client: TestClient, database: Database, people: dict[str, Any]) -> None:
    with database.session() as session:
        session.execute(sa.insert(ErrorRecord), [
            {"source": "import" if n % 2 else "notify", "at": utcnow(), "message": {"reason": f"bad <{n}>", "n": n}}
            for n in range(PAGE_SIZE * 2 + 5)])
    admin(client)
    first = client.get("/errors?source=import", headers=JSON).json()
    assert [e["source"] for e in first["errors"]] == ["import"] * PAGE_SIZE
    ids = [e["id"] for e in first["errors"]]
    assert ids == sorted(ids, reverse=True), "newest first"
    second = client.get(first["older"], headers=JSON).json()
    assert second["errors"] and max(e["id"] for e in second["errors"]) < min(ids), "older page, no overlap"
    assert second["older"] is None and len(first["errors"]) + len(second["errors"]) == (PAGE_SIZE * 2 + 5) // 2
    page = client.get("/errors?source=notify")
    assert page.status_code == 200 and "bad &lt;" in page.text and "<option value=\"notify\" selected>" in page.text
    fragment = client.get("/errors", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="errors-table">')


def test_audit_filters_and_csv_export(client: TestClient, database: Database, people: dict[str, Any]) -> None:
    now = utcnow()
    with database.session() as session:
        session.execute(sa.insert(AuditEvent), [
            {"at": now - timedelta(hours=n), "actor": f"person{n % 3}@example.com", "action": action,
             "subject": f"request:{n}", "details": {"n": n, "note": 'comma, "quote"'}}
            for n in range(EXPORT_BATCH + 30) for action in ["request.submitted"]])
        session.add(AuditEvent(at=now, actor="root", action="grant.revoked", subject="grant:7", details={}))
    admin(client)
    by_actor = client.get("/audit?actor=person1&action=request.", headers=JSON).json()["events"]
    assert by_actor and all("person1" in e["actor"] and e["action"] == "request.submitted" for e in by_actor)
    exact = client.get("/audit?subject=grant:7", headers=JSON).json()["events"]
    assert [e["action"] for e in exact] == ["grant.revoked"]
    recent = client.get("/audit", params={"since": (now - timedelta(hours=2, minutes=30)).isoformat(),
                                          "action": "request."}, headers=JSON).json()["events"]
    assert sorted(e["details"]["n"] for e in recent) == [0, 1, 2]
    as_the_form_sends_it = client.get("/audit?since=2000-01-01T00:00&until=2000-01-02T00:00", headers=JSON)
    assert as_the_form_sends_it.status_code == 200 and as_the_form_sends_it.json()["events"] == []

    page = client.get("/audit?action=request.submitted")
    assert 'href="/audit.csv?action=request.submitted"' in page.text
    export = client.get("/audit.csv?action=request.")
    assert export.headers["content-type"].startswith("text/csv")
    assert "attachment" in export.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(export.text)))
    assert rows[0] == ["id", "at", "actor", "actor_id", "channel", "token_id", "action", "subject", "details"]
    assert len(rows) - 1 == EXPORT_BATCH + 30, "every matching row, across export batches"
    ids = [int(r[0]) for r in rows[1:]]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "oldest first, once each"
    assert json.loads(rows[1][8])["note"] == 'comma, "quote"'


def test_the_csv_export_never_writes_a_formula(client: TestClient, people: dict[str, Any]) -> None:
    """A failed sign-in records the email as typed; a spreadsheet must show it, not run it."""
    hostile = '=HYPERLINK("http://127.0.0.1:9/x?"&A1,"open")'
    for email in (hostile, "+1+cmd|' /C calc'!A0", "-2+3", "@SUM(1)", "\tline", "plain@example.com"):
        client.post("/login", data={"email": email, "password": "wrong password!", "csrf_token": csrf_token(client)})
    admin(client)
    rows = list(csv.reader(io.StringIO(client.get("/audit.csv?action=auth.sign_in_failed").text)))
    actors = {row[2] for row in rows[1:]}
    assert "'" + hostile.lower() in actors and "plain@example.com" in actors
    assert not [cell for row in rows[1:] for cell in row if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]


def test_the_logs_are_for_admins(client: TestClient, people: dict[str, Any]) -> None:
    sign_in(client, "member@example.com")
    for path in ("/errors", "/audit", "/audit.csv"):
        assert client.get(path).status_code == 403
