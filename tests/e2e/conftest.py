"""Browser tests: the real app in a real uvicorn, driven by Debian's Chromium via Playwright.

`serve()` runs `create_app(settings)` (the suite's per-test `settings`, on SQLite or
PostgreSQL) in uvicorn on 127.0.0.1, port 0, in a thread; it waits for /readyz and stops the
server after the test. `open_page(server, javascript=...)` opens a page in a fresh browser
context that records console errors, page errors and CSP violations.

Playwright's sync API is driven directly (not through pytest-playwright) so that it lives only
as long as this package's tests: while it runs, the main thread looks like it has a running
asyncio loop, and the rest of the suite calls DBOS's sync API, which refuses that. The browser
is /usr/bin/chromium (never Playwright's own download); without it these tests are skipped,
and `.ci/run` installs it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, sync_playwright

from support.browser import AXE_URL_PATH, CHROMIUM, CHROMIUM_ARGS, LiveServer, Watched, serve_axe
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import User
from webapp.services.catalog import ResourceChanges, save_resource

ACTION_TIMEOUT_MS = 10_000
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every browser test is `once` (CI runs it on SQLite only: it drives pages, which do not
    differ by database), and skipped when Debian's Chromium is missing."""
    skip = None if CHROMIUM.exists() else pytest.mark.skip(reason=f"{CHROMIUM} is missing (apt-get install chromium)")
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.once)
            if skip is not None:
                item.add_marker(skip)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One headless Chromium for this package's tests, closed when they are done."""
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def serve(settings: Settings) -> Iterator[Callable[[], LiveServer]]:
    """`serve()` starts the app for this test: call it after arranging the database. `port`: a
    port chosen beforehand (the identity provider must know the address); `changes`: settings."""
    started: list[LiveServer] = []

    def start(*, port: int = 0, **changes: Any) -> LiveServer:
        assert not started, "one server per test: DBOS is one per process"
        server = LiveServer(create_app(settings.model_copy(update=changes)), port)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def open_page(serve: Any, browser: Browser) -> Iterator[Callable[..., Watched]]:
    """`open_page(server, javascript=True, viewport=None, color_scheme=None, time_zone=None)`: a
    page in its own context (its own cookies), `viewport` (width, height) wide, in the light or
    dark scheme, its clock in `time_zone` (an IANA name).

    Depends on `serve` so that the contexts close before the server stops."""
    contexts: list[BrowserContext] = []

    def open_(server: LiveServer, *, javascript: bool = True, viewport: tuple[int, int] | None = None,
              color_scheme: str | None = None, time_zone: str | None = None) -> Watched:
        size: dict[str, Any] = {"viewport": {"width": viewport[0], "height": viewport[1]}} if viewport else {}
        if color_scheme:
            size["color_scheme"] = color_scheme  # "dark": the theme that follows the system setting
        if time_zone:
            size["timezone_id"] = time_zone
        context = browser.new_context(java_script_enabled=javascript, **size)
        context.set_default_timeout(ACTION_TIMEOUT_MS)
        contexts.append(context)
        context.route(f"{server.url}{AXE_URL_PATH}", serve_axe)
        page = context.new_page()
        watched = Watched(page, server.url)

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                watched.console.append(f"[{message.type}] {page.url}: {message.text}")

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.errors.append(f"[pageerror] {page.url}: {error}"))
        return watched

    yield open_
    for context in contexts:
        context.close()


def add_resources(database: Database, people: dict[str, User], *names: str) -> None:
    """Databases that Arlo Approver approves (and admins may decide), one approval each."""
    with database.session() as session:
        for name in names:
            save_resource(session, ResourceChanges(
                name=name, kind="database", description=f"The {name.removesuffix('-db')} database.",
                approvals_required=1, max_duration_seconds=None, pending_ttl_seconds=72 * 3600, auto_approve=False,
                approver_ids=[people["approver"].id],  # type: ignore[list-item]
            ), resource=None, actor="test", actor_id=None)


@pytest.fixture
def server(serve, database: Database, people: dict[str, User]) -> LiveServer:  # type: ignore[no-untyped-def]
    """The app over the `people` fixture and one resource that Arlo Approver approves."""
    add_resources(database, people, "staging-db")
    return serve()  # type: ignore[no-any-return]
