"""/ops/workflows: the DBOS workflows behind the app, linked to what they work for."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from support.access import make_resource, submit
from support.web import sign_in
from webapp.core.db import Database

JSON = {"Accept": "application/json"}


def test_workflows_are_listed_filtered_and_linked(client: TestClient, database: Database,
                                                  people: dict[str, Any]) -> None:
    resource_id = make_resource(database, people)
    sign_in(client, "member@example.com")
    request_ids = [submit(client, resource_id), submit(client, make_resource(database, people, "wiki"))]
    client.cookies.clear()
    sign_in(client, "admin@example.com")

    listed = client.get("/ops/workflows?name=access_request_workflow", headers=JSON).json()["workflows"]
    assert sorted(int(w["link"].rsplit("/", 1)[1]) for w in listed) == sorted(request_ids)
    assert all(w["status"] == "PENDING" and w["link_text"].startswith("Request #") for w in listed)
    assert listed[0]["created"] >= listed[1]["created"], "newest first"

    prefix = listed[0]["id"][:12]
    assert {w["id"] for w in client.get(f"/ops/workflows?prefix={prefix}", headers=JSON).json()["workflows"]} \
        >= {listed[0]["id"]}
    assert client.get("/ops/workflows?status=CANCELLED", headers=JSON).json()["workflows"] == []
    notify = client.get("/ops/workflows?queue=outbox", headers=JSON).json()["workflows"]
    assert notify and all(w["queue"] == "outbox" for w in notify)

    page = client.get("/ops/workflows?status=PENDING")
    assert page.status_code == 200 and f'href="/requests/{request_ids[0]}"' in page.text
    assert '<option value="PENDING" selected>' in page.text
    fragment = client.get("/ops/workflows", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="workflows-table">')


def test_workflows_are_for_admins(client: TestClient, people: dict[str, Any]) -> None:
    sign_in(client, "approver@example.com")
    assert client.get("/ops/workflows").status_code == 403


def test_workflows_by_request_import_job_and_time(client: TestClient, database: Database,
                                                  people: dict[str, Any]) -> None:
    sign_in(client, "member@example.com")
    first, second = submit(client, make_resource(database, people)), submit(client, make_resource(database, people, "wiki"))
    client.cookies.clear()
    sign_in(client, "admin@example.com")

    mine = client.get(f"/ops/workflows?request={first}", headers=JSON).json()["workflows"]
    assert [(w["link"], w["progress"]) for w in mine] == [(f"/requests/{first}", "requested")]
    assert client.get("/ops/workflows?request=999999", headers=JSON).json()["workflows"] == []
    assert client.get("/ops/workflows?job=7", headers=JSON).json()["workflows"] == []
    assert client.get("/ops/workflows?job=7&prefix=request-", headers=JSON).json()["workflows"] == []

    started = sorted(w["created"] for w in client.get("/ops/workflows?name=access_request_workflow",
                                                      headers=JSON).json()["workflows"])
    later = started[1][:16]  # the minute of the second request: since is inclusive, until exclusive
    after = client.get(f"/ops/workflows?name=access_request_workflow&since={later}", headers=JSON).json()
    before = client.get(f"/ops/workflows?name=access_request_workflow&until={later}", headers=JSON).json()
    assert len(after["workflows"]) + len(before["workflows"]) == 2
    assert client.get("/ops/workflows?since=2000-01-01T00:00&until=2000-01-02T00:00",
                      headers=JSON).json()["workflows"] == []
    page = client.get(f"/ops/workflows?request={second}&since=2000-01-01T00:00")
    assert 'value="2000-01-01T00:00"' in page.text and f'value="{second}"' in page.text and "requested" in page.text
