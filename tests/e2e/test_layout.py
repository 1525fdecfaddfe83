"""Every page fits a phone (390×844) and a desktop (1366×900): nothing scrolls sideways (wide
tables scroll in their own box), as the role that may see the page, over the demo data.

Every GET page of the route table (tests/test_route_matrix.py) is visited, so a new page is
checked the day it is added. With GATEHOUSE_SCREENSHOTS set to a folder (`make screenshots`
sets var/screenshots), a full-page screenshot of each is saved there.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from test_route_matrix import ROUTES

from e2e.test_accessibility import waiting_task
from support.browser import PASSWORD, Watched, send_request, sign_in
from support.web import TEST_SECRET, concrete
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Agent, Grant, ImportJob, Resource, User
from webapp.services.decision_links import link_token
from webapp.services.demo import email_for, seed_demo
from webapp.web.security import Access

SIZES = {"phone": (390, 844), "desktop": (1366, 900)}
NOT_PAGES = {"/healthz", "/readyz", "/events", "/dashboard/counters", "/openapi.json", "/audit.csv",
             "/admin/import/{job_id:int}/events", "/login/oidc", "/auth/callback"}  # the last two redirect
WHO = {Access.public: None, Access.member: email_for("Jamal Carter"), Access.approver: email_for("Chiara Rossi"),
       Access.admin: email_for("Ada Okafor")}
REASON = "Debugging the staging deploy pipeline this week."


def pages() -> list[tuple[Access, str]]:
    return sorted(((access, path) for (method, path), access in ROUTES.items()
                   if method == "GET" and path not in NOT_PAGES), key=lambda item: (item[0].value, item[1]))


def demo_ids(database: Database) -> dict[str, Any]:
    with database.session() as session:
        member = session.scalars(sa.select(User).where(User.email == WHO[Access.member])).one()
        job = ImportJob(source="layout.json", source_kind="file", count=1, seed="layout", chunk_size=1, page_size=1,
                        status="finished", workflow_id="layout-import")
        session.add(job)
        session.flush()
        return {"user_id": member.id, "job_id": job.id,
                "resource_id": session.scalar(sa.select(sa.func.min(Resource.id))),
                "agent_id": session.scalar(sa.select(sa.func.min(Agent.id))),
                "batch_id": "none"}


WIDEST = """() => {
  const over = document.documentElement.scrollWidth - window.innerWidth;
  if (over <= 0) return null;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const box = el.getBoundingClientRect();
    if (box.right > window.innerWidth + 1 && !el.closest('.table-scroll')) {
      out.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${el.className ? '.' + String(el.className).split(' ').join('.') : ''} right=${Math.round(box.right)}`);
    }
  }
  return `${over} px too wide; reaching out: ${out.slice(0, 5).join(', ')}`;
}"""


def overflow(watched: Watched) -> str | None:
    """None when the page fits the window; else by how much, and the elements that reach out."""
    return watched.page.evaluate(WIDEST)  # type: ignore[no-any-return]


def test_every_page_fits_a_phone_and_a_desktop(serve, open_page, database: Database) -> None:  # type: ignore[no-untyped-def]
    with database.session() as session:
        seed_demo(session, password=PASSWORD)
    ids = demo_ids(database)
    server = serve()
    shots = os.environ.get("GATEHOUSE_SCREENSHOTS")
    too_wide: list[str] = []
    for size, viewport in SIZES.items():
        windows: dict[Access, Watched] = {}
        for access, email in WHO.items():
            windows[access] = open_page(server, viewport=viewport)
            if email:
                sign_in(windows[access], email)
        if "request_id" not in ids:
            ids.update(own_request(windows[Access.member], database, ids["user_id"]))
        for access, path in pages():
            # An emailed decision link opens for the approver it was sent to.
            window = windows[Access.approver if path == "/decide/{token}" else access]
            url = concrete(path, ids)
            response = window.page.goto(server.url + url)
            assert response is not None
            if response.status == 404 and "{batch_id}" in path:
                continue  # the demo has no batch: the 404 page is checked at both sizes anyway
            assert response.status == 200, f"{url} as {access.value}: {response.status}"
            extra = overflow(window)
            if extra:
                too_wide.append(f"{url} as {access.value} at {size} ({viewport[0]} px): {extra}")
            if shots:
                name = re.sub(r"[^a-z0-9]+", "-", url.lower()).strip("-") or "home"
                folder = Path(shots) / size
                folder.mkdir(parents=True, exist_ok=True)
                window.page.screenshot(path=str(folder / f"{access.value}-{name}.png"), full_page=True,
                                       animations="disabled", timeout=30_000)
    assert not too_wide, "pages that scroll sideways:\n" + "\n".join(too_wide)


def own_request(member: Watched, database: Database, member_id: int) -> dict[str, Any]:
    """A request the member sends through the form (a real workflow behind it), and a task of theirs."""
    request_id = send_request(member, "aws-staging", REASON)
    with database.session() as session:
        workflow_id = session.get_one(AccessRequest, request_id).workflow_id
        granted = session.scalar(sa.select(Grant.request_id).where(Grant.user_id == member_id,
                                                                   Grant.request_id.is_not(None)).limit(1))  # type: ignore[union-attr]
    assert granted is not None, "the demo gives the member a grant"
    return {"request_id": request_id, "workflow_id": workflow_id, "task_id": waiting_task(database, granted),
            "token": link_token(TEST_SECRET, request_id, WHO[Access.approver], "reject", time.time() + 3600)}
