"""Kill -9 in the middle of an import, restart, and every valid person is imported exactly
once with the counts right. Real processes on PostgreSQL: `webapp serve` (a job started
over HTTP) and `webapp import-users` (the CLI), each killed with SIGKILL to its whole
process group at chosen points and started again with the same executor id. Also the
biggest import of the suite, 5,000 people with a member each."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from support.processes import READY_SECONDS, REPO, AppProcess, app_env
from support.randomuser_server import RandomUserServer
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AuditEvent, ErrorRecord, ImportChunk, ImportedPerson, ImportJob, User
from webapp.services.accounts import create_user

pytestmark = pytest.mark.slow

FINISH_SECONDS = 120.0
MALFORMED_EVERY = 50


@pytest.fixture
def api() -> Iterator[RandomUserServer]:
    with RandomUserServer() as server:
        server.delay = 0.05  # a page takes a moment, so kills land mid-job
        server.malformed_every = MALFORMED_EVERY
        yield server


def env_for(settings: Settings, tmp_path: Path) -> dict[str, str]:
    return app_env(settings, EXECUTOR_ID="import-crash", APP_VERSION="import-crash",
                   IMPORT_CACHE_DIR=str(tmp_path / "cache"), IMPORT_PAGE_SIZE="200", IMPORT_CONCURRENCY="2",
                   IMPORT_FETCH_RETRY_INTERVAL_SECONDS="0.1")


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_long(check: Callable[[], Any], what: str, timeout: float = FINISH_SECONDS) -> Any:
    return wait_for(check, timeout, what, interval=0.02)


def chunks_done(database: Database, job_id: int) -> int:
    with database.session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(ImportChunk)
                                  .where(ImportChunk.job_id == job_id, ImportChunk.status == "done")) or 0)


def job_status(database: Database, job_id: int) -> str:
    with database.session() as session:
        return str(session.get_one(ImportJob, job_id).status)


def assert_imported_exactly_once(database: Database, api: RandomUserServer, job_id: int, seed: str, count: int) -> None:
    bad = count // MALFORMED_EVERY
    valid = count - bad
    expected_uuids = {api.person(seed, n)["login"]["uuid"] for n in range(count) if (n + 1) % MALFORMED_EVERY}
    with database.session() as session:
        job = session.get_one(ImportJob, job_id)
        chunks = list(session.scalars(sa.select(ImportChunk).where(ImportChunk.job_id == job_id)))
        uuids = list(session.scalars(sa.select(ImportedPerson.login_uuid)))
        errors = [e for e in session.scalars(sa.select(ErrorRecord).where(ErrorRecord.source == "import"))
                  if e.message.get("job_id") == job_id]
        actions = Counter(session.scalars(sa.select(AuditEvent.action)
                                          .where(AuditEvent.subject == f"import:{job_id}")))
    assert job.status == "finished", job.status
    assert (job.imported, job.invalid, job.chunks_done, job.chunks_failed) == (valid, bad, len(chunks), 0)
    assert all(c.status == "done" for c in chunks)
    assert sum(c.imported for c in chunks) == valid and sum(c.invalid for c in chunks) == bad
    assert len(uuids) == valid and set(uuids) == expected_uuids, "every valid person, once"
    positions = {e.message["position"] for e in errors if "position" in e.message}
    assert len(errors) == bad and len(positions) == bad, "every bad record logged once"
    assert actions["import.started"] == 1 and actions["import.finished"] == 1


def admin_token(database: Database) -> str:
    with database.session() as session:
        admin = create_user(session, email="importer@example.test", name="Ida Importer", password=None, role="admin")
        _, secret = personal_token(session, admin, name="crash")
        return secret


def test_a_killed_server_finishes_the_import_exactly_once(pg_settings: Settings, database: Database,
                                                          api: RandomUserServer, tmp_path: Path) -> None:
    count, seed = 4000, "crash-serve"
    token = admin_token(database)
    with (tmp_path / "app.log").open("w") as log:
        server = AppProcess(env_for(pg_settings, tmp_path), log)
        try:
            server.start()
            response = server.http.post("/admin/import", timeout=30,
                                  headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
                                  data={"source": api.url, "count": str(count), "seed": seed, "chunk_size": "100",
                                        "form_key": uuid.uuid4().hex})
            assert response.status_code == 201, response.text
            job_id = response.json()["id"]
            kills = []
            server.kill()  # right after the start: the first page is being fetched
            kills.append(chunks_done(database, job_id))
            for at_least in (8, 24):
                server.start()
                wait_long(lambda n=at_least: chunks_done(database, job_id) >= n, f"{at_least} chunks")  # type: ignore[misc]
                server.kill()
                kills.append(chunks_done(database, job_id))
            assert job_status(database, job_id) == "running" and kills[-1] < 40, kills
            server.start()
            wait_long(lambda: job_status(database, job_id) == "finished", "the job to finish")
        except BaseException:
            log.flush()
            print((tmp_path / "app.log").read_text()[-6000:])
            raise
        finally:
            server.stop()
    assert_imported_exactly_once(database, api, job_id, seed, count)
    print(f"\nkilled at {kills} chunks done of 40; {len(api.requests)} page requests for 20 pages")
    # A kill loses at most the fetches in flight: the parent's page and the pages it was
    # prefetching (IMPORT_PREFETCH_PAGES, 2 by default); every cached page is read, not fetched.
    in_flight = 1 + Settings.model_fields["import_prefetch_pages"].default
    assert len(api.requests) <= 20 + len(kills) * in_flight, "cached pages are not fetched again"


def test_a_killed_cli_finishes_the_import_when_run_again(pg_settings: Settings, database: Database,
                                                         api: RandomUserServer, tmp_path: Path) -> None:
    count, seed = 3000, "crash-cli"
    command = [sys.executable, "-m", "webapp", "import-users", "--source", api.url, "--count", str(count),
               "--seed", seed, "--chunk-size", "100", "--quiet"]
    env = env_for(pg_settings, tmp_path)
    with (tmp_path / "cli.log").open("w") as log:
        first = subprocess.Popen(command, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        job_id = wait_long(lambda: _only_job(database), "the job to be recorded", READY_SECONDS)
        wait_long(lambda: chunks_done(database, job_id) >= 6, "6 chunks")
        kill_group(first)
        killed_at = chunks_done(database, job_id)
        assert job_status(database, job_id) == "running" and killed_at < 30
        again = subprocess.run(command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               timeout=FINISH_SECONDS)
    output = again.stdout.decode()
    assert again.returncode == 0, output + (tmp_path / "cli.log").read_text()
    assert f"import {job_id} with these settings is unfinished; following it" in output
    assert f"import {job_id} finished: {count - count // MALFORMED_EVERY:,} people imported" in output
    assert_imported_exactly_once(database, api, job_id, seed, count)
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportJob)) == 1


def _only_job(database: Database) -> int | None:
    with database.session() as session:
        return session.scalar(sa.select(ImportJob.id))


def test_5000_people_with_members_on_postgres(pg_settings: Settings, database: Database, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from webapp.cli.imports import import_users

    settings = pg_settings.model_copy(update={"import_cache_dir": tmp_path / "cache"})
    began = time.monotonic()
    status = import_users(settings, source=str(REPO / "samples" / "people-5000.json"), count=5000, seed="big",
                          chunk_size=500, create_users=True, quiet=True)
    elapsed = time.monotonic() - began
    assert status == 0, capsys.readouterr()
    with database.session() as session:
        people = session.scalar(sa.select(sa.func.count()).select_from(ImportedPerson))
        linked = session.scalar(sa.select(sa.func.count()).select_from(ImportedPerson)
                                .where(ImportedPerson.user_id.is_not(None)))  # type: ignore[union-attr]
        members = session.scalar(sa.select(sa.func.count()).select_from(User).where(User.password_hash.is_(None)))  # type: ignore[union-attr]
    assert people == linked == 5000
    assert members == len({p.lower() for p in _sample_emails()})
    print(f"\n5,000 people and their members in {elapsed:.1f} s")


def _sample_emails() -> list[str]:
    import json

    document = json.loads((REPO / "samples" / "people-5000.json").read_text(encoding="utf-8"))
    return [p["email"] for p in document["results"]]
