"""An admin imports people in a real browser: the form, then the job page, whose progress
section follows the job over server-sent events until it has finished, without a reload.
Both pages pass axe-core and leave the console clean."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from support.browser import LiveServer, Watched, describe_violations, run_axe, sign_in
from webapp.config import Settings
from webapp.core.models import User

OpenPage = Callable[..., Watched]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Two chunks a second, so a 200-person job of ten chunks takes a few seconds to watch."""
    return settings.model_copy(update={"import_rate_limit": 2, "import_rate_period": 1.0, "import_concurrency": 1})


def test_an_admin_follows_an_import_live(serve, open_page: OpenPage, people: dict[str, User]) -> None:  # type: ignore[no-untyped-def]
    server: LiveServer = serve()
    admin = open_page(server)
    sign_in(admin, "admin@example.com")
    admin.goto("/admin/import")
    violations = run_axe(admin)
    assert not violations, describe_violations("imports", violations)

    page = admin.page
    page.get_by_label("Source").fill("people-200.json")
    page.get_by_label("How many people").fill("200")
    page.get_by_label("Batch size").fill("20")
    page.get_by_role("button", name="Start import").click()
    page.wait_for_url("**/admin/import/*")
    page.evaluate("window.stillTheSamePage = true")  # gone if anything reloads the page

    section = page.locator("#import-progress")
    expect(section).to_contain_text("running")
    expect(section).to_contain_text("finished", timeout=30_000)
    expect(section).to_contain_text("200")
    assert page.evaluate("window.stillTheSamePage") is True, "the progress arrived without a reload"
    assert page.locator("#import-progress .chunk-grid .chunk-done").count() == 10
    violations = run_axe(admin)
    assert not violations, describe_violations("import job", violations)
    admin.assert_clean()
