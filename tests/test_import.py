"""Bulk import end to end: the admin pages start jobs that fetch from a randomuser-compatible
API on loopback (tests/randomuser_server.py) or a sample file, and the workflows write
people, chunk by chunk, on SQLite or PostgreSQL (TEST_DATABASE_URL)."""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from dbos import DBOS
from starlette.testclient import TestClient

from support.randomuser_server import RandomUserServer
from support.sse_client import read_stream
from support.web import post_form, sign_in, unmasked
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import (
    AuditEvent,
    ChunkStatus,
    ErrorRecord,
    ImportChunk,
    ImportedPerson,
    ImportJob,
    User,
)

REPO = Path(__file__).resolve().parent.parent
JSON = {"Accept": "application/json"}


@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    """The suite's settings, with a fresh page cache and quick fetch retries."""
    return settings.model_copy(update={
        "import_cache_dir": tmp_path / "import-cache",
        "import_files_dir": REPO / "samples",
        "import_fetch_max_attempts": 3,
        "import_fetch_retry_interval_seconds": 0.05,
        "import_fetch_backoff_rate": 1.0,
        "import_fetch_timeout_seconds": 5.0,
    })


@pytest.fixture
def api() -> Iterator[RandomUserServer]:
    with RandomUserServer() as server:
        yield server


@pytest.fixture
def admin(client: TestClient, people: dict[str, Any]) -> TestClient:
    sign_in(client, "admin@example.com")
    return client


def start(client: TestClient, source: str, count: int, *, seed: str = "test", chunk_size: int = 100,
          expect: int = 201, **extra: Any) -> dict[str, Any]:
    form = {"source": source, "count": str(count), "seed": seed, "chunk_size": str(chunk_size),
            "form_key": uuid.uuid4().hex, **extra}
    response = post_form(client, "/admin/import", form, headers=JSON)
    assert response.status_code == expect, response.text
    return response.json()  # type: ignore[no-any-return]


def wait_for_run(started: dict[str, Any]) -> Any:
    """The run's parent workflow result: the job's totals once the run ended."""
    return DBOS.retrieve_workflow(started["workflow_id"]).get_result(polling_interval_sec=0.05)


def progress(client: TestClient, job_id: int) -> dict[str, Any]:
    response = client.get(f"/admin/import/{job_id}", headers=JSON)
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


def count_people(database: Database) -> int:
    with database.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(ImportedPerson)) or 0)


def import_errors(database: Database, job_id: int) -> list[ErrorRecord]:
    with database.session() as session:
        return [e for e in session.scalars(sa.select(ErrorRecord).where(ErrorRecord.source == "import"))
                if e.message.get("job_id") == job_id]


def audit_actions(database: Database, job_id: int) -> list[str]:
    with database.session() as session:
        return list(session.scalars(sa.select(AuditEvent.action).where(AuditEvent.subject == f"import:{job_id}")
                                    .order_by(AuditEvent.id)))


def test_import_1000_from_the_api(admin: TestClient, api: RandomUserServer, database: Database) -> None:
    started = start(admin, api.url, 1000, chunk_size=100)
    result = wait_for_run(started)
    assert result["status"] == "finished" and result["imported"] == 1000 and result["invalid"] == 0
    job_id = started["id"]
    view = progress(admin, job_id)
    assert view["status"] == "finished" and view["imported"] == 1000
    assert view["chunks"]["total"] == view["chunks"]["done"] == 10
    assert count_people(database) == 1000
    assert api.requests == [("test", 1, 1000, "")], "one page of 1,000 people, fetched once"
    with database.session() as session:
        person = session.scalars(sa.select(ImportedPerson).where(ImportedPerson.login_uuid ==
                                                                 api.person("test", 123)["login"]["uuid"])).one()
        expected = api.person("test", 123)
        assert (person.email, person.name_last, person.nat) == (expected["email"], expected["name"]["last"],
                                                                expected["nat"])
        assert person.import_job_id == job_id and person.user_id is None
        job = session.get_one(ImportJob, job_id)
        assert (job.imported, job.chunks_done, job.chunks_failed) == (1000, 10, 0)
    assert audit_actions(database, job_id) == ["import.started", "import.finished"]
    page = admin.get(f"/admin/import/{job_id}")
    assert page.status_code == 200 and "1,000" in page.text and "every 1s" not in page.text
    fragment = admin.get(f"/admin/import/{job_id}", headers={"HX-Request": "true"})
    assert fragment.text.lstrip().startswith('<section id="import-progress"')
    assert admin.get("/admin/import").text.count(f'href="/admin/import/{job_id}"') == 1


def test_reimporting_updates_people_and_the_cache_prevents_refetching(
        admin: TestClient, api: RandomUserServer, database: Database) -> None:
    first = start(admin, api.url, 300, seed="again", chunk_size=100)
    wait_for_run(first)
    with database.session() as session:
        session.execute(sa.update(ImportedPerson).values(city="Changed"))
    second = start(admin, api.url, 300, seed="again", chunk_size=100)
    result = wait_for_run(second)
    assert result["status"] == "finished" and result["imported"] == 300
    assert count_people(database) == 300, "upserted on the login uuid, never duplicated"
    assert len(api.requests) == 1, "the second job read the cached page"
    with database.session() as session:
        assert "Changed" not in set(session.scalars(sa.select(ImportedPerson.city)))
        assert set(session.scalars(sa.select(ImportedPerson.import_job_id))) == {second["id"]}


def test_malformed_records_are_logged_and_skipped(admin: TestClient, api: RandomUserServer,
                                                  database: Database) -> None:
    api.malformed_every = 10
    started = start(admin, api.url, 200, seed="bad", chunk_size=50)
    result = wait_for_run(started)
    assert result["status"] == "finished"
    assert (result["imported"], result["invalid"]) == (180, 20)
    assert count_people(database) == 180
    errors = import_errors(database, started["id"])
    assert len(errors) == 20
    reasons = {e.message["reason"].split(":")[0] for e in errors}
    assert reasons == {"login.uuid", "email", "location.coordinates.latitude", "dob.age", "name"}
    assert all(e.message["record"] for e in errors) and sorted(e.message["position"] for e in errors) == list(range(9, 200, 10))
    view = progress(admin, started["id"])
    assert view["invalid"] == 20 and view["chunks"]["done"] == 4
    page = admin.get(f"/admin/import/{started['id']}")
    assert "not-an-email" in page.text and "Records set aside (the latest)" in page.text


def test_a_flaky_source_is_retried(admin: TestClient, api: RandomUserServer, database: Database) -> None:
    api.fail_next(2, 503)
    started = start(admin, api.url, 100, seed="flaky", chunk_size=50)
    assert wait_for_run(started)["status"] == "finished"
    assert count_people(database) == 100
    # Two refusals, then the page. (A connection the server closed after a 503 can cost the
    # client one more try, so the count is a floor; the cache test counts fetches exactly.)
    assert len(api.requests) >= 3


def test_a_dead_source_fails_chunks_that_can_be_retried_alone(
        admin: TestClient, api: RandomUserServer, database: Database, settings: Settings) -> None:
    """Page 2 keeps failing: its chunks fail, the other pages' land; then one chunk is
    retried alone, then the other, once the source is back."""
    settings.import_page_size = 100
    api.fail_page(2, 503)
    started = start(admin, api.url, 300, seed="dead", chunk_size=50)
    result = wait_for_run(started)
    job_id = started["id"]
    assert result["status"] == "failed" and result["imported"] == 200 and result["chunks_failed"] == 2
    view = progress(admin, job_id)
    assert [c["number"] for c in view["failed_chunks"]] == [2, 3]
    assert view["failed_chunks"][0]["error"] == "page 2 could not be fetched: HTTP 503 (after 3 tries)"
    assert admin.get(f"/admin/import/{job_id}").text.count("Retry batch") == 2

    api.heal()
    one = post_form(admin, f"/admin/import/{job_id}/retry", {"chunk": "3"}, headers=JSON)
    assert one.status_code == 201, one.text
    assert wait_for_run(one.json())["status"] == "failed"
    view = progress(admin, job_id)
    assert [c["number"] for c in view["failed_chunks"]] == [2] and view["imported"] == 250

    rest = post_form(admin, f"/admin/import/{job_id}/retry", headers=JSON)
    assert rest.status_code == 201
    assert wait_for_run(rest.json()) | {"job_id": job_id} == {
        "job_id": job_id, "status": "finished", "imported": 300, "invalid": 0, "chunks_done": 6,
        "chunks_failed": 0, "chunks_total": 6}
    assert count_people(database) == 300
    assert post_form(admin, f"/admin/import/{job_id}/retry", headers=JSON).status_code == 409
    assert audit_actions(database, job_id) == ["import.started", "import.failed", "import.retried",
                                               "import.failed", "import.retried", "import.finished"]


def test_a_cancelled_job_stops_and_resumes(admin: TestClient, api: RandomUserServer, database: Database,
                                          settings: Settings) -> None:
    settings.import_page_size = 50
    api.delay = 0.2  # each page takes a while: the job is still fetching when it is cancelled
    started = start(admin, api.url, 1000, seed="stop", chunk_size=50)
    job_id = started["id"]
    deadline = time.monotonic() + 20
    while progress(admin, job_id)["chunks"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    cancel = post_form(admin, f"/admin/import/{job_id}/cancel", headers=JSON)
    assert cancel.status_code == 200, cancel.text
    assert post_form(admin, f"/admin/import/{job_id}/cancel", headers=JSON).status_code == 409
    result = wait_for_run(started)
    assert result["status"] == "cancelled"
    stopped_at = count_people(database)
    assert 50 <= stopped_at < 1000 and result["imported"] == stopped_at
    fetched = len(api.requests)
    assert fetched < 20, "the parent stopped fetching pages"
    view = progress(admin, job_id)
    assert view["chunks"]["done"] + view["chunks"]["pending"] + view["chunks"]["cancelled"] == 20
    time.sleep(0.3)
    assert count_people(database) == stopped_at, "nothing is written after the job stopped"

    api.delay = 0
    resumed = post_form(admin, f"/admin/import/{job_id}/resume", headers=JSON)
    assert resumed.status_code == 201, resumed.text
    result = wait_for_run(resumed.json())
    assert result["status"] == "finished" and result["imported"] == 1000
    assert count_people(database) == 1000
    assert len(api.requests) == 20, "pages fetched before the cancel were not fetched again"
    assert audit_actions(database, job_id) == ["import.started", "import.cancel_requested", "import.cancelled",
                                               "import.resumed", "import.finished"]
    assert post_form(admin, f"/admin/import/{job_id}/resume", headers=JSON).status_code == 409


def test_people_from_a_file_can_become_members(admin: TestClient, database: Database, people: dict[str, Any]) -> None:
    with database.session() as session:
        session.add(User(email="existing.member@example.com", name="Old Name"))
        session.flush()
    started = start(admin, "people-200.json", 500, seed="file", chunk_size=64, create_users="on")
    result = wait_for_run(started)
    assert result["status"] == "finished" and result["imported"] == 200, "a file gives what it holds"
    with database.session() as session:
        job = session.get_one(ImportJob, started["id"])
        assert (job.count, job.source_kind, job.chunks_total) == (200, "file", 4)
        linked = session.execute(sa.select(ImportedPerson.email, User.email, User.role, User.password_hash, User.name)
                                 .join(User, User.id == ImportedPerson.user_id)).all()
        admin_user = session.get_one(User, people["admin"].id)
    assert len(linked) == 200
    assert all(u_email == p_email.lower() and role == "member" and pw is None for p_email, u_email, role, pw, _ in linked)
    assert admin_user.role == "admin" and admin_user.password_hash is not None


def test_the_form_refuses_what_it_cannot_import(admin: TestClient, api: RandomUserServer, database: Database) -> None:
    for fields, field in [
        ({"source": "/etc/passwd"}, "source"), ({"source": "../samples/people-20.json"}, "source"),
        ({"source": "ftp://example.com"}, "source"), ({"count": "0"}, "count"), ({"count": "10000000"}, "count"),
        ({"seed": "two words"}, "seed"), ({"chunk_size": "5001"}, "chunk_size"), ({"nat": "DEU"}, "nat"),
        ({"count": "1000000", "chunk_size": "1"}, "chunk_size"), ({"form_key": "short"}, "form_key"),
    ]:
        form = {"source": api.url, "count": "10", "seed": "s", "chunk_size": "10", "form_key": uuid.uuid4().hex,
                **fields}
        response = post_form(admin, "/admin/import", form, headers=JSON)
        assert response.status_code == 422, (fields, response.text)
        assert field in response.json()["fields"], (fields, response.json())
        html = post_form(admin, "/admin/import", form)
        assert html.status_code == 422
        assert ('aria-invalid="true"' if field != "form_key" else "out of date") in html.text
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportJob)) == 0
    assert admin.get("/admin/import/999999").status_code == 404
    assert post_form(admin, "/admin/import/999999/cancel").status_code == 404


def test_a_double_submit_starts_one_job(admin: TestClient, database: Database) -> None:
    form = {"source": "people-20.json", "count": "20", "seed": "twice", "chunk_size": "10", "form_key": "same-key-123"}
    first = post_form(admin, "/admin/import", form)
    second = post_form(admin, "/admin/import", form)
    assert first.status_code == second.status_code == 303
    assert first.headers["location"] == second.headers["location"]
    wait_for_run({"workflow_id": "import-start-same-key-123"})
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportJob)) == 1


def test_the_job_page_follows_progress_over_sse(admin: TestClient, api: RandomUserServer) -> None:
    api.delay = 0.3
    started = start(admin, api.url, 40, seed="slow", chunk_size=10)
    page = admin.get(f"/admin/import/{started['id']}")
    assert f'sse-connect="/admin/import/{started["id"]}/events"' in page.text and 'sse-close="done"' in page.text
    assert "Cancel import" in page.text and f'value="{admin.cookies["gh_csrf"]}"' in unmasked(page.text)

    events = read_stream(admin, f"/admin/import/{started['id']}/events",
                         until=lambda found: found[-1].name == "done", timeout=30)
    progress_events = [e for e in events if e.name == "progress"]
    assert [e.name for e in events][-1] == "done"
    assert len(progress_events) >= 2, "the section is sent again as chunks finish"
    assert len({e.text for e in progress_events}) == len(progress_events), "only changes are sent"
    assert all(e.text.lstrip().startswith('<section id="import-progress"') for e in progress_events)
    final = progress_events[-1].text
    assert "finished" in final and ">40</span>" in final and "Cancel import" not in final
    after = admin.get(f"/admin/import/{started['id']}")
    assert "/events\"" in after.text and f"/admin/import/{started['id']}/events" not in after.text, \
        "a finished job's page opens no stream of its own (only the site-wide feed)"
    assert admin.get("/admin/import/999999/events").status_code == 404


def test_the_cli_imports_with_a_progress_line(settings: Settings, database: Database,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from webapp.cli.imports import CommandError, import_users

    out = io.StringIO()
    status = import_users(settings, source=str(REPO / "samples" / "people-200.json"), count=150, seed="cli",
                          chunk_size=50, out=out)
    assert status == 0
    assert count_people(database) == 150
    assert "import 1 started: 150 people" in out.getvalue()
    assert "100% 150/150 (0 bad) chunks 3/3 done 0 failed" in out.getvalue()
    assert "import 1 finished: 150 people imported" in capsys.readouterr().out
    with pytest.raises(CommandError, match="Nothing left to resume"):
        import_users(settings, source=None, count=0, seed="", chunk_size=None, resume=1, out=io.StringIO())


def test_the_cli_says_where_a_stalled_import_waits_and_stops_at_its_timeout(
        settings: Settings, database: Database, api: RandomUserServer) -> None:
    from webapp.cli.imports import TIMED_OUT, import_users

    api.delay = 5.0  # the source answers, but slowly: the first page is not fetched in time
    out = io.StringIO()
    began = time.monotonic()
    # 2.5 s: time for the chunk to leave the queue on a loaded machine, far less than the delay.
    status = import_users(settings, source=api.url, count=20, seed="stall", chunk_size=20, timeout=2.5,
                          stall_seconds=0.5, out=out)
    assert status == TIMED_OUT and time.monotonic() - began < 4.5
    text = out.getvalue()
    assert "waiting: chunk 0 (page 1) has run for" in text
    assert "its page is not fetched yet" in text
    assert "still running after 2.5 s" in text and "Run the same command again" in text

    time.sleep(api.delay)  # the slow answer arrives; the stopped command's chunk records nothing more
    api.delay = 0.0
    again = io.StringIO()
    status = import_users(settings, source=api.url, count=20, seed="stall", chunk_size=20, timeout=60, out=again)
    assert status == 0, again.getvalue()
    assert "with these settings is unfinished; following it" in again.getvalue()
    assert count_people(database) == 20


def test_spans_carry_the_workflow_id(admin: TestClient, api: RandomUserServer) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from webapp.services.people_import import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_test_provider(provider)
    try:
        started = start(admin, api.url, 200, seed="traced", chunk_size=100)
        wait_for_run(started)
    finally:
        tracing.install_test_provider(None)
    spans = exporter.get_finished_spans()
    [job] = [span for span in spans if span.name == "import.job" and span.attributes["import.job_id"] == started["id"]]
    by_name: dict[str, list[Any]] = {}
    for span in spans:  # this job's trace only: an earlier test's stalled import may still be fetching
        if span.context.trace_id == job.context.trace_id:
            by_name.setdefault(span.name, []).append(span)
    assert {name: len(found) for name, found in by_name.items()} == {
        "import.job": 1, "import.fetch": 3, "import.chunk": 2, "import.insert": 2}
    job_span = by_name["import.job"][0]
    assert job_span.attributes["workflow.id"] == started["workflow_id"]
    assert job_span.attributes["import.job_id"] == started["id"]
    for span in by_name["import.chunk"] + by_name["import.insert"]:
        assert span.attributes["workflow.id"].startswith(f"import-{started['id']}-r1-c")
        assert span.context.trace_id == job_span.context.trace_id, "the chunks join the job's trace"
    assert sorted(s.attributes["import.fetched"] for s in by_name["import.fetch"]) == [False, False, True]
    assert sum(s.attributes["import.records"] for s in by_name["import.insert"]) == 200


def test_tracing_is_off_without_an_endpoint() -> None:
    from opentelemetry import trace

    from webapp.services.people_import import tracing

    assert isinstance(tracing.tracer(None), trace.NoOpTracer)
    with tracing.span(None, "import.test", "wf-1", page=1) as current:
        assert not current.is_recording()
    assert tracing.carrier_of_current() == {}


def test_chunk_rows_are_the_source_of_progress(admin: TestClient, database: Database) -> None:
    started = start(admin, "people-1000.json", 1000, seed="rows", chunk_size=250)
    wait_for_run(started)
    with database.session() as session:
        chunks = list(session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == started["id"])))
    assert sorted(c.number for c in chunks) == [0, 1, 2, 3]
    assert all(c.status == ChunkStatus.done and c.imported == 250 and c.attempts == 1 for c in chunks)
    assert all(c.workflow_id == f"import-{started['id']}-r1-c{c.number}" for c in chunks)


def test_a_failing_parent_leaves_the_job_resumable(admin: TestClient, database: Database,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from webapp.workflows import imports

    def broken(*_args: Any) -> str:
        raise RuntimeError("the database went away")

    monkeypatch.setattr(imports, "chunk_workflow_id", broken)
    started = start(admin, "people-20.json", 20, seed="broken", chunk_size=10)
    with pytest.raises(RuntimeError):
        wait_for_run(started)
    view = progress(admin, started["id"])
    assert view["status"] == "failed" and view["imported"] == 0 and view["chunks"]["failed"] == 2
    assert "the database went away" in admin.get(f"/admin/import/{started['id']}").text
    monkeypatch.undo()
    resumed = post_form(admin, f"/admin/import/{started['id']}/resume", headers=JSON)
    assert resumed.status_code == 201, resumed.text
    assert wait_for_run(resumed.json())["imported"] == 20
    assert audit_actions(database, started["id"]) == ["import.started", "import.failed", "import.resumed",
                                                      "import.finished"]
