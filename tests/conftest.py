"""Fixtures shared by the whole suite.

Every test runs on SQLite by default, and on PostgreSQL when TEST_DATABASE_URL points
at a server: the session then creates its own databases (app and DBOS system) with a
random name and drops them at the end; the shared ones are never touched. Each test
starts from empty tables and an empty DBOS system database.
"""

from __future__ import annotations

import asyncio
import io
import os
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa
from dbos import DBOS
from sqlalchemy.engine import make_url
from sqlmodel import SQLModel
from starlette.testclient import TestClient

from support.web import PASSWORD, TEST_SECRET, sign_in
from webapp.app import create_app
from webapp.config import Settings
from webapp.core import (
    models,  # noqa: F401 - registers the tables
    passwords,
)
from webapp.core.db import Database
from webapp.core.migrate import upgrade

if TYPE_CHECKING:  # imported late below: support.receivers is a pytest plugin, loaded after this file
    from support.slapd import Slapd

pytest_plugins = ["support.receivers"]  # SMTP and webhook servers on loopback

# People made by the tests get argon2id hashes of light cost (a millisecond, not a fifth of a
# second, which every sign-in of every test paid): tests/test_auth.py covers the real cost.
passwords.use_cost("light")

_exit_status = 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    global _exit_status
    _exit_status = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave without joining DBOS executor threads: workflows of earlier tests wait in
    DBOS.recv for hours, and DBOS.destroy() does not wake them (see `webapp serve`)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(_exit_status)


def _server_url(url: str, database: str) -> str:
    return make_url(url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def database_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(app database URL, DBOS system database URL), created and migrated once a session."""
    server = os.environ.get("TEST_DATABASE_URL")
    if not server:
        directory = tmp_path_factory.mktemp("db")
        app_url = f"sqlite:///{directory / 'app.sqlite'}"
        upgrade(app_url)
        yield app_url, f"sqlite:///{directory / 'dbos.sqlite'}"
        return

    name = f"gatehouse_test_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(_server_url(server, "postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{name}_dbos"'))
    app_url = _server_url(server, name)
    try:
        upgrade(app_url)
        yield app_url, _server_url(server, f"{name}_dbos")
    finally:
        with admin.connect() as conn:
            for db in (name, f"{name}_dbos"):
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def on_postgres(database_urls: tuple[str, str]) -> bool:
    return database_urls[0].startswith("postgresql")


def empty_app_tables(engine: sa.Engine) -> None:
    """Delete every app row, and the datasource checkpoints that DBOS keeps beside them."""
    tables = [t.name for t in SQLModel.metadata.sorted_tables]
    postgres = engine.dialect.name == "postgresql"
    checkpoint_schema = "dbos" if postgres else None
    with engine.begin() as conn:
        if postgres:
            conn.execute(sa.text("SET LOCAL lock_timeout = '20s'"))  # fail loudly, never hang
            conn.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for table in reversed(tables):
                conn.execute(sa.text(f"DELETE FROM {table}"))
            conn.execute(sa.text("DELETE FROM sqlite_sequence"))
        if sa.inspect(conn).has_table("datasource_outputs", schema=checkpoint_schema):
            qualified = f"{checkpoint_schema}.datasource_outputs" if postgres else "datasource_outputs"
            conn.execute(sa.text(f"DELETE FROM {qualified}"))


def end_leftover_connections(app_url: str, system_url: str) -> None:
    """Close every connection an earlier test left open on this session's PostgreSQL databases.

    DBOS.destroy() does not stop executor threads that wait in DBOS.recv; when one of them
    wakes it may hold a lock, and TRUNCATE (which needs an exclusive lock) would wait for it
    forever. Each test starts its own app, so nothing still connected belongs to this test."""
    names = [make_url(url).database for url in (app_url, system_url)]
    engine = sa.create_engine(app_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(
                sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"),
                {"names": names},
            )
    finally:
        engine.dispose()


@pytest.fixture
def settings(database_urls: tuple[str, str], tmp_path: Path) -> Settings:
    """Settings for one test, over empty tables and an empty DBOS system database."""
    app_url, system_url = database_urls
    if app_url.startswith("postgresql"):
        end_leftover_connections(app_url, system_url)
    engine = sa.create_engine(app_url)
    try:
        empty_app_tables(engine)
    finally:
        engine.dispose()
    DBOS.reset_system_database(system_database_url=system_url, truncate=True)
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="development",
        database_url=app_url,
        dbos_system_database_url=system_url,
        secret_key=TEST_SECRET,
        executor_id="test-executor",
        app_version="test",
        log_format="console",
        log_level="WARNING",
        queue_polling_interval=0.05,
        notify_queue_polling_interval=0.05,
        background_queue_polling_interval=0.05,
        agent_queue_polling_interval=0.05,
        import_allowed_hosts="127.0.0.1",  # the loopback randomuser server (tests/support)
        agent_allowed_hosts="127.0.0.1,::1,localhost",  # agents reach only what the tests start
        # Workflows that sleep for hours (grants) would hold every test's shutdown otherwise.
        shutdown_grace_seconds=0.5,
        password_hashing="light",
    )


@pytest.fixture
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


STOP_WATCH_SECONDS = 30.0


def _dump_tasks(loop: asyncio.AbstractEventLoop) -> None:
    """Print every task of the app's event loop (py-spy and faulthandler see only threads),
    to the terminal pytest started with: its capture would hold the text back until the
    test ends, which a hang never does."""
    out = io.StringIO()
    for task in asyncio.all_tasks(loop):
        print(f"\n--- still running at shutdown: {task!r}", file=out)
        task.print_stack(file=out)
    capture = _pytest_config.pluginmanager.getplugin("capturemanager") if _pytest_config else None
    if capture is not None:
        capture.suspend_global_capture(in_=True)
    try:
        sys.stderr.write(out.getvalue())
        sys.stderr.flush()
    finally:
        if capture is not None:
            capture.resume_global_capture()


_pytest_config: pytest.Config | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _pytest_config
    _pytest_config = config


@pytest.fixture
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """A client whose `with` block runs the lifespan: DBOS is launched for the test.

    If the app takes more than STOP_WATCH_SECONDS to stop, its event loop's tasks are
    printed, so a hang in shutdown names the coroutine that waits."""
    with TestClient(app, base_url="http://testserver") as test_client:
        yield test_client
        loop = test_client.portal.call(asyncio.get_running_loop)  # type: ignore[union-attr]
        watch = threading.Timer(STOP_WATCH_SECONDS, lambda: loop.call_soon_threadsafe(_dump_tasks, loop))
        watch.daemon = True
        watch.start()
    watch.cancel()


@pytest.fixture
def pg_settings(on_postgres: bool, request: pytest.FixtureRequest) -> Settings:
    """`settings`, for tests that run several real processes on one database: PostgreSQL only."""
    if not on_postgres:
        pytest.skip("real processes sharing one database need PostgreSQL: set TEST_DATABASE_URL")
    return request.getfixturevalue("settings")  # type: ignore[no-any-return]


@pytest.fixture
def database(settings: Settings) -> Iterator[Database]:
    """Direct access to the app tables, for arranging and asserting."""
    db = Database(settings.database_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def people(database: Database) -> dict[str, "models.User"]:
    """One person per role (plus a second approver), all with PASSWORD."""
    from webapp.services.accounts import create_user

    specs = {
        "admin": ("admin@example.com", "Ada Admin", "admin", "Security"),
        "approver": ("approver@example.com", "Arlo Approver", "approver", "Platform"),
        "approver2": ("approver2@example.com", "Bea Approver", "approver", "Platform"),
        "member": ("member@example.com", "Mo Member", "member", "Engineering"),
    }
    with database.session() as session:
        return {
            key: create_user(session, email=email, name=name, password=PASSWORD, role=role, department=dept)
            for key, (email, name, role, dept) in specs.items()
        }


@pytest.fixture
def fast_settings(settings):  # type: ignore[no-untyped-def]
    return settings.model_copy(update={
        "notify_retry_interval_seconds": 0.05, "grant_reminder_min_seconds": 2, "grant_reminder_before_seconds": 1,
        "agent_retry_first_seconds": 0.1, "agent_retry_max_seconds": 0.5, "task_remind_seconds": 1.0,
    })


@pytest.fixture
def clients(fast_settings, people) -> Iterator[dict[str, TestClient]]:  # type: ignore[no-untyped-def]
    """One signed-in browser per person, all on one running app."""
    app = create_app(fast_settings)
    with TestClient(app) as first:
        browsers = {"member": first}
        for role in ("approver", "approver2", "admin"):
            browsers[role] = TestClient(app)
        for role, browser in browsers.items():
            sign_in(browser, people[role].email)
        yield browsers


# Target systems for the agents (issue 13), started by the tests on loopback ------------------

@pytest.fixture
def directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Slapd]:
    """A throwaway OpenLDAP slapd; the LDAP agent's password in GATEHOUSE_AGENT_TEST_LDAP_PASSWORD."""
    from support.slapd import Slapd, available

    if not available():
        pytest.skip("needs OpenLDAP's slapd (Debian package slapd; .ci/run installs it)")
    with Slapd(tmp_path) as running:
        monkeypatch.setenv("GATEHOUSE_AGENT_TEST_LDAP_PASSWORD", running.password)
        yield running


@pytest.fixture
def pg_group() -> Iterator[str]:
    """A fresh group role on the local PostgreSQL server, and the login gh_member."""
    from support.pg_roles import create_login, group_role, pg_server_up

    if not pg_server_up():
        pytest.skip("needs the local PostgreSQL server (127.0.0.1:5432)")
    create_login("gh_member")
    with group_role() as group:
        yield group
