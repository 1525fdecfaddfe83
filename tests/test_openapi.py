"""The JSON API against its own description: `/openapi.json` is a valid OpenAPI 3.1 spec of
our routes, `/docs` shows every operation of it, and schemathesis, sending generated
requests (valid and invalid) to every operation as an admin, finds no server error and no
answer the spec does not describe (status, content type, headers, body).

schemathesis drives the app in-process through the test client, whose lifespan has
launched DBOS; its own ASGI transport would start a second lifespan (and a second DBOS).
"""

from __future__ import annotations

import html
import time
import uuid
from typing import Any

import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route
from starlette.testclient import TestClient

from support.access import make_resource
from support.waiting import wait_for
from support.web import personal_token
from webapp.core.db import Database
from webapp.core.models import ErrorRecord, User
from webapp.web.api.spec import OPERATIONS

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]
BASE_URL = "http://testserver"
FAILED = (AssertionError, schemathesis.errors.FailureGroup, ExceptionGroup)  # a check's verdict, one or several
REASON = "Checking the API against its own description."
# Examples per operation: valid requests, then invalid ones. Derandomized, so a run is repeatable.
POSITIVE_EXAMPLES = 8
NEGATIVE_EXAMPLES = 5


def bearer(database: Database, people, role: str) -> str:  # type: ignore[no-untyped-def]
    with database.session() as session:
        _token, secret = personal_token(session, session.get(User, people[role].id), name=f"{role} api")
    return secret


def api(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def send(client: TestClient, case: schemathesis.Case, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    """The case as schemathesis would send it (requests prepares the body), through our client.
    An exception out of the app (a 500 for a real client) fails with the request as curl."""
    kwargs = case.as_transport_kwargs(base_url=BASE_URL, headers=headers)
    prepared = requests.Request(**{k: v for k, v in kwargs.items()
                                   if k in ("method", "url", "headers", "params", "data", "json", "files")}).prepare()
    try:
        return client.request(prepared.method or "GET", prepared.url or "", headers=dict(prepared.headers),
                              content=prepared.body, follow_redirects=False)
    except Exception as exc:
        raise AssertionError(f"Server error: {type(exc).__name__}: {exc}\n"
                             f"    {case.as_curl_command(headers=headers)}") from exc


@pytest.fixture
def seeded(client: TestClient, database: Database, people) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """A resource with approvers, requests in several states (made through the API), a grant,
    a batch and an error record: real ids for the operations that take one."""
    tokens = {role: bearer(database, people, role) for role in ("admin", "member", "approver2")}
    admin = tokens["admin"]
    resource_id = make_resource(database, people, approvers=("approver", "admin"))
    wiki_id = make_resource(database, people, "wiki", approvers=("approver",))

    def ask(role: str, resource: int = resource_id) -> dict[str, Any]:
        answer = client.post("/requests", headers=api(tokens[role]), data={
            "resource_id": resource, "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
        assert answer.status_code == 201, answer.text
        return answer.json()  # type: ignore[no-any-return]

    granted = ask("member")
    approved = client.post(f"/requests/{granted['id']}/approve", headers=api(admin))
    assert approved.status_code == 200, approved.text
    grant_id = wait_for(lambda: client.get(f"/requests/{granted['id']}", headers=api(admin)).json()["grant"],
                        what="the grant")["id"]
    batch = client.post("/ops/batch/1", headers=api(admin), data={"reason": "a batch of one"})
    assert batch.status_code == 202, batch.text
    with database.session() as session:
        session.add(ErrorRecord(source="api-test", request_id=granted["id"], message={"error": "for the log"}))
    return {"admin": admin, "resource_id": resource_id, "wiki_id": wiki_id, "grant_id": grant_id,
            "granted": granted, "batch_id": batch.json()["batch_id"], "ask": ask}


def test_openapi_json_describes_our_routes(client: TestClient) -> None:
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    spec = response.json()
    assert spec["openapi"].startswith("3.1")
    described = {(method.upper(), path) for path, methods in spec["paths"].items() for method in methods}
    assert described == set(OPERATIONS)
    ids = [op["operationId"] for methods in spec["paths"].values() for op in methods.values()]
    assert len(ids) == len(set(ids)), "operation ids are unique"
    routes = {route.path for route in client.app.routes if isinstance(route, Route)}  # type: ignore[attr-defined]
    for (method, path), _op in OPERATIONS.items():
        op = spec["paths"][path][method.lower()]
        assert op["summary"], (method, path)
        assert any(path == r.replace(":int}", "}").replace(":path}", "}") for r in routes)
        assert ("401" in op["responses"]) == (op["security"] != []), (method, path)
    # An integer input without a bound that fits an INTEGER column is a 500 on PostgreSQL
    # (psycopg refuses the comparison), whatever SQLite does.
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            body = op.get("requestBody", {}).get("content", {}).get("application/x-www-form-urlencoded", {})
            inputs = [(p["name"], p["schema"]) for p in op["parameters"]]
            inputs += list(body.get("schema", {}).get("properties", {}).items())
            for name, schema in inputs:
                if schema.get("type") == "integer":
                    assert 1 <= schema.get("minimum", -1) and schema.get("maximum", 2**63) < 2**31, (method, path, name)
    assert spec["paths"]["/ops/batch/{count}"]["post"]["parameters"][0]["schema"]["maximum"] == \
        client.app.state.settings.batch_max_count  # type: ignore[attr-defined]
    # schemathesis reads it without complaint: every operation, every reference resolves.
    loaded = schemathesis.openapi.from_dict(spec)
    operations = [result.ok() for result in loaded.get_all_operations()]
    assert len(operations) == len(OPERATIONS)


def test_docs_page_shows_every_operation_and_shape(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    text = page.text
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert f'id="{op["operationId"]}"' in text
            assert f"<code>{method.upper()} {html.escape(path)}</code>" in text
            for parameter in op["parameters"]:
                assert f"<code>{parameter['name']}</code>" in text
            for field in op.get("requestBody", {}).get("content", {}).get(
                    "application/x-www-form-urlencoded", {}).get("schema", {}).get("properties", {}):
                assert f"<code>{field}</code>" in text
    for name in spec["components"]["schemas"]:
        assert f'id="shape-{name}"' in text
    assert "<script>" not in text.split("</head>", 1)[1], "no inline script: the page is plain HTML"
    assert 'href="/docs"' in client.get("/login").text, "the footer links to the API"


def test_api_errors_are_json_with_fields(client: TestClient, database: Database, people) -> None:  # type: ignore[no-untyped-def]
    admin = bearer(database, people, "admin")
    refused = client.post("/ops/workflows/nope/cancel", headers=api(admin), data={})
    assert refused.status_code == 422
    assert refused.json() == {"error": "This field is required.", "status": 422,
                              "fields": {"reason": "This field is required."}}
    batch = client.post("/ops/submit", headers=api(admin), data={"reason": "why not"})
    assert batch.status_code == 422 and batch.json()["fields"] == {"resource_id": "This field is required."}
    listed = client.get("/ops/batches", headers=api(admin))
    assert listed.status_code == 200 and listed.json() == {
        "batches": [], "max_count": client.app.state.settings.batch_max_count}  # type: ignore[attr-defined]
    assert client.get("/requests", headers={"Accept": "application/json"}).json() == {
        "error": "Sign in to continue.", "status": 401}


def _explicit_cases(schema: Any, seeded: dict[str, Any]) -> list[tuple[schemathesis.Case, int]]:
    """Requests that must succeed, on the seeded objects (generated ids rarely exist): each
    with the status it must get."""
    form = "application/x-www-form-urlencoded"
    workflow_id = seeded["granted"]["workflow_id"]

    def case(method: str, path: str, status: int, *, path_parameters: dict[str, Any] | None = None,
             query: dict[str, Any] | None = None, body: dict[str, Any] | None = None) -> tuple[Any, int]:
        operation = schema[path][method]
        made = operation.Case(path_parameters=path_parameters, query=query,
                              **({"body": body, "media_type": form} if body is not None else {}))
        return made, status

    ask, wiki = seeded["ask"], seeded["wiki_id"]
    # The member holds the first resource already (`granted`): asking for it again would be refused.
    to_approve, to_reject, own, running = ask("member", wiki), ask("approver2"), ask("admin", wiki), ask("approver2", wiki)
    return [
        case("GET", "/requests/{request_id}", 200, path_parameters={"request_id": seeded["granted"]["id"]}),
        case("GET", "/requests", 200, query={"status": "approved", "sort": "requester", "order": "asc"}),
        case("POST", "/requests/{request_id}/approve", 200, path_parameters={"request_id": to_approve["id"]},
             body={"comment": "fine"}),
        case("POST", "/requests/{request_id}/reject", 200, path_parameters={"request_id": to_reject["id"]},
             body={"comment": "not this week"}),
        case("POST", "/requests/{request_id}/cancel", 200, path_parameters={"request_id": own["id"]}),
        case("POST", "/requests/{request_id}/cancel", 403, path_parameters={"request_id": running["id"]}),
        case("POST", "/grants/{grant_id}/revoke", 200, path_parameters={"grant_id": seeded["grant_id"]},
             body={"note": "done"}),
        case("GET", "/admin/resources/{resource_id}/access", 200,
             path_parameters={"resource_id": seeded["resource_id"]}, query={"at": "2030-01-01T00:00"}),
        case("GET", "/admin/resources/{resource_id}/access", 400,
             path_parameters={"resource_id": seeded["resource_id"]}, query={"at": "yesterday"}),
        case("GET", "/ops/workflows", 200, query={"request": seeded["granted"]["id"]}),
        case("GET", "/ops/workflows/{workflow_id}", 200, path_parameters={"workflow_id": workflow_id}),
        case("POST", "/ops/workflows/{workflow_id}/cancel", 200, path_parameters={"workflow_id": running["workflow_id"]},
             body={"reason": "by the API test"}),
        case("POST", "/ops/workflows/{workflow_id}/resume", 200, path_parameters={"workflow_id": running["workflow_id"]},
             body={"reason": "by the API test"}),
        case("POST", "/ops/workflows/{workflow_id}/fork", 409, path_parameters={"workflow_id": running["workflow_id"]},
             body={"reason": "still running", "step": 1}),
        case("GET", "/ops/batches/{batch_id}", 200, path_parameters={"batch_id": seeded["batch_id"]}),
        case("POST", "/ops/schedules/{schedule}/pause", 200, path_parameters={"schedule": "sweep"}),
        case("POST", "/ops/schedules/{schedule}/pause", 409, path_parameters={"schedule": "sweep"}),
        case("POST", "/ops/schedules/{schedule}/resume", 200, path_parameters={"schedule": "sweep"}),
        case("POST", "/ops/schedules/{schedule}/trigger", 200, path_parameters={"schedule": "sweep"}),
        case("POST", "/requests", 201, body={"resource_id": wiki, "duration": "1h",
                                             "reason": REASON, "form_key": uuid.uuid4().hex}),
        case("POST", "/ops/submit", 202, body={"resource_id": seeded["resource_id"], "reason": "everyone, once"}),
        case("POST", "/ops/shutdown", 409, body={"reason": "not under the test client"}),
    ]


# schemathesis draws some choices from the `random` module, which Hypothesis seeds for each
# example (so runs stay repeatable) but warns about.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies"
                            ":hypothesis.errors.HypothesisDeprecationWarning")
@pytest.mark.once  # two minutes of generated calls: the API's shape does not differ by database
def test_schemathesis_finds_no_server_error_and_no_undescribed_answer(  # type: ignore[no-untyped-def]
        client: TestClient, seeded) -> None:
    # /ops/shutdown is fuzzed too: under the test client it can only answer 409 (or 422),
    # since no `webapp serve` set app.state.serving_pid; it never signals this process.
    assert getattr(client.app.state, "serving_pid", None) is None  # type: ignore[attr-defined]
    schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
    headers = api(seeded["admin"])
    failures: list[str] = []
    started = time.monotonic()

    def check_one(case: schemathesis.Case, status: int | None = None) -> None:
        response = send(client, case, headers)
        if status is not None and response.status_code != status:
            raise AssertionError(f"expected {status}, got {response.status_code}: {response.text[:300]}")
        case.validate_response(response, checks=CHECKS)

    explicit = _explicit_cases(schema, seeded)
    for made, status in explicit:
        try:
            check_one(made, status)
        except FAILED as failure:
            failures.append(f"{made.operation.label} {made.path_parameters or ''}: {failure}")

    counted = {"operations": 0, "coverage": 0, "generated": 0}
    for result in schema.get_all_operations():
        operation = result.ok()
        counted["operations"] += 1
        # Boundaries first (schemathesis's coverage phase: deterministic), then random examples.
        for case in schema.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                               generation_config=schema.config.generation_for(operation=operation)):
            counted["coverage"] += 1
            try:
                check_one(case)
            except FAILED as failure:
                failures.append(f"{operation.label} (coverage): {failure}")
        for mode, examples in ((GenerationMode.POSITIVE, POSITIVE_EXAMPLES),
                               (GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES)):

            @hypothesis.settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                                 phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case) -> None:
                counted["generated"] += 1
                check_one(case)

            try:
                check()
            except hypothesis.errors.Unsatisfiable:  # no input to make invalid (/healthz, /ops/queues...)
                assert mode is GenerationMode.NEGATIVE, operation.label
            except FAILED as failure:  # schemathesis's FailureGroup, with the request as curl
                failures.append(f"{operation.label} ({mode.value}): {failure}")

    elapsed = time.monotonic() - started
    print(f"\nschemathesis: {counted['operations']} operations; {len(explicit)} explicit, {counted['coverage']} "
          f"coverage and {counted['generated']} generated requests; {elapsed:.1f} s")
    assert not failures, "\n\n".join(failures)
