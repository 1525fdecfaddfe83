"""Helpers for the browser tests: the app in a real uvicorn, pages that record what the
browser complains about, sign-in through the real form, and axe-core.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import uvicorn
from playwright.sync_api import Locator, Page, Response, Route, expect

CHROMIUM = Path("/usr/bin/chromium")
# Running as root in a container: no sandbox; and nothing that phones home or updates itself.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AXE_FILE = Path(__file__).resolve().parent / "vendor" / "axe-core-4.14.1.min.js"
# The page loads axe from its own origin (`<script src>`), and Playwright answers that URL from
# AXE_FILE (context.route): the app's CSP (script-src 'self') stays enforced while axe runs, and
# the app never sees the path.
AXE_URL_PATH = "/__e2e__/axe-core.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa"]
READY_SECONDS = 30.0
# The password of tests/conftest.py's `people` fixture.
PASSWORD = "correct horse battery staple"


class LiveServer:
    """uvicorn serving one app on an ephemeral loopback port, in a thread."""

    def __init__(self, app: Any, port: int = 0) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, lifespan="on", log_config=None, access_log=False,
            ws="none",  # the app serves no websockets
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="e2e-uvicorn", daemon=True)
        self.url = ""

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + READY_SECONDS
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn stopped during startup (see the log above)")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start")
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=self.url, timeout=5.0) as client:
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError("the app did not become ready")
                time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


@dataclass
class Watched:
    """A page and what it reported: console errors and warnings (CSP violations are console
    errors in Chromium), and uncaught JavaScript errors."""

    page: Page
    base_url: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str, *, status: int = 200) -> None:
        response = self.page.goto(self.base_url + path)
        assert response is not None
        assert response.status == status, f"GET {path}: {response.status}"

    @property
    def path(self) -> str:
        return re.sub(r"^https?://[^/]+", "", self.page.url)

    def problems(self, *, allow: tuple[str, ...] = ()) -> list[str]:
        """What the browser complained about, less the expected lines (regexes)."""
        return [line for line in (*self.console, *self.errors)
                if not any(re.search(pattern, line) for pattern in allow)]

    def assert_clean(self, *, allow: tuple[str, ...] = ()) -> None:
        problems = self.problems(allow=allow)
        assert not problems, "the browser reported:\n  " + "\n  ".join(problems)


def serve_axe(route: Route) -> None:
    route.fulfill(path=AXE_FILE, content_type="text/javascript; charset=utf-8")


def expected_status(status: int) -> str:
    """The console line Chromium writes for a page or fetch answered with `status`."""
    return rf"Failed to load resource: the server responded with a status of {status}\b"


def post(watched: Watched, button: Locator) -> Response:
    """Click a button that submits a plain form (no htmx); the answer to the POST itself."""
    with watched.page.expect_response(
        lambda r: r.request.method == "POST" and r.request.resource_type == "document"
    ) as posted:
        button.click()
    return posted.value


def post_and_follow(watched: Watched, button: Locator) -> str:
    """Submit a plain form that must answer 303, and wait for the page it leads to; its path."""
    answer = post(watched, button)
    location = answer.header_value("location")
    assert answer.status == 303 and location, f"POST {answer.url}: {answer.status}, expected a 303"
    watched.page.wait_for_url(urljoin(answer.url, location))
    return watched.path


def sign_in(watched: Watched, email: str, password: str = PASSWORD) -> None:
    """Sign in through the real form, as a person would."""
    page = watched.page
    watched.goto("/login")
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    path = post_and_follow(watched, page.get_by_role("button", name="Sign in"))
    assert not path.startswith("/login"), f"sign-in as {email} went to {path}"


def choose_resource(watched: Watched, name: str) -> None:
    """Pick a resource by name in the request form: a radio of /requests/new's picker, or an
    option of the dashboard's list (its options also say kind and limits)."""
    form = watched.page.locator("#request-form")
    radio = form.get_by_role("radio", name=re.compile(rf"^{re.escape(name)}\b"))
    if radio.count():
        radio.check()
        return
    select = form.get_by_label("Resource")
    value = select.locator("option", has_text=f"{name} (").get_attribute("value")
    select.select_option(value=value)


def send_request(watched: Watched, resource: str, reason: str) -> int:
    """Ask for `resource` through the form, with JavaScript (htmx puts the request in the
    form's place); the new request's id."""
    watched.goto("/requests/new")
    choose_resource(watched, resource)
    watched.page.get_by_label("Why do you need it?").fill(reason)
    watched.page.get_by_role("button", name="Send request").click()
    heading = watched.page.locator("#request-detail h1")
    expect(heading).to_contain_text(resource)
    return int(re.search(r"#(\d+)", heading.inner_text())[1])  # type: ignore[index]


def run_axe(watched: Watched) -> list[dict[str, Any]]:
    """axe-core's WCAG 2 A and AA violations on the page as it is now."""
    page = watched.page
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.add_script_tag(url=AXE_URL_PATH)
    result = page.evaluate("tags => axe.run(document, {runOnly: tags, resultTypes: ['violations']})", AXE_TAGS)
    return list(result["violations"])


def describe_violations(where: str, violations: list[dict[str, Any]]) -> str:
    lines = [f"{where}: {len(violations)} axe violation(s)"]
    for violation in violations:
        lines.append(f"- {violation['id']} ({violation['impact']}): {violation['help']} <{violation['helpUrl']}>")
        for node in violation["nodes"][:8]:
            lines.append(f"    {' '.join(map(str, node['target']))}: {node['html'][:160]}")
            summary = " ".join((node.get("failureSummary") or "").split())
            if summary:
                lines.append(f"      {summary[:300]}")
    return "\n".join(lines)
