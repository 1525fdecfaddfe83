"""Two app processes on one PostgreSQL database: a change made through process A reaches a
browser connected to process B, in order and without a reload (LISTEN/NOTIFY wakes B's
tailer of the audit table). Real `webapp serve` processes, real SSE over HTTP."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from support.processes import AppProcess, app_env
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Resource, ResourceApprover
from webapp.services.accounts import create_user

pytestmark = pytest.mark.slow
REASON = "Two processes: checking that the feed crosses them."


@pytest.fixture
def processes(pg_settings: Settings, tmp_path: Path) -> Iterator[tuple[AppProcess, AppProcess]]:
    with (tmp_path / "a.log").open("w") as log_a, (tmp_path / "b.log").open("w") as log_b:
        apps = (AppProcess(app_env(pg_settings, EXECUTOR_ID="proc-a"), log_a, cwd=tmp_path),
                AppProcess(app_env(pg_settings, EXECUTOR_ID="proc-b"), log_b, cwd=tmp_path))
        try:
            for app in apps:
                app.start()
            yield apps
        finally:
            for app in apps:
                app.stop()


class Listener:
    """An SSE client of /events in a thread, collecting (id, event, data) as they come."""

    def __init__(self, base_url: str, token: str) -> None:
        self.events: list[tuple[int, str, str]] = []
        self.error: BaseException | None = None
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(base_url, token), daemon=True)
        self._thread.start()

    def _run(self, base_url: str, token: str) -> None:
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        try:
            with httpx.stream("GET", f"{base_url}/events", headers=headers, timeout=30) as response:
                assert response.status_code == 200
                self.connected.set()
                current: dict[str, str] = {}
                for line in response.iter_lines():
                    if self._stop.is_set():
                        return
                    if line == "":
                        if "id" in current:
                            self.events.append((int(current["id"]), current.get("event", ""), current.get("data", "")))
                        current = {}
                    elif ":" in line and not line.startswith(":"):
                        key, _, value = line.partition(":")
                        current[key] = current.get(key, "") + value.removeprefix(" ")
        except BaseException as error:  # noqa: BLE001 - reported to the test
            if not self._stop.is_set():
                self.error = error

    def stop(self) -> None:
        self._stop.set()


def test_a_change_through_one_process_reaches_a_browser_on_the_other(
        processes: tuple[AppProcess, AppProcess], database: Database) -> None:
    a, b = processes
    with database.session() as session:
        create_user(session, email="root@example.test", name="Ria Root", password=None, role="admin")
        member = create_user(session, email="mo@example.test", name="Mo Member", password=None, role="member")
        approver = create_user(session, email="arlo@example.test", name="Arlo", password=None, role="approver")
        resource = Resource(name="ledger-db", kind="database")
        session.add(resource)
        session.flush()
        session.add(ResourceApprover(resource_id=resource.id, user_id=approver.id))  # type: ignore[arg-type]
        _, member_token = personal_token(session, member)
        _, approver_token = personal_token(session, approver)
        resource_id = resource.id

    watcher = Listener(b.base_url, approver_token)  # the approver's browser, on process B
    try:
        assert watcher.connected.wait(10), watcher.error
        submitted = a.http.post("/requests", headers={"Authorization": f"Bearer {member_token}"}, data={
            "resource_id": str(resource_id), "duration": "8h", "reason": REASON, "form_key": uuid.uuid4().hex})
        assert submitted.status_code == 303, submitted.text
        request_id = int(submitted.headers["location"].rsplit("/", 1)[1])

        def actions() -> list[str]:
            assert watcher.error is None, watcher.error
            return [data for _id, _event, data in watcher.events if f"request:{request_id}" in data]

        wait_for(lambda: any("request.submitted" in d for d in actions()), what="B to show the submission", timeout=15)
        approved = a.http.post(f"/requests/{request_id}/approve", data={"comment": "ok"},
                               headers={"Authorization": f"Bearer {approver_token}"})
        assert approved.status_code in (200, 303), approved.text
        wait_for(lambda: any("request.approved" in d for d in actions()), what="B to show the approval", timeout=15)
    finally:
        watcher.stop()

    ids = [event_id for event_id, _event, _data in watcher.events]
    assert ids == sorted(set(ids)), "in audit order, nothing twice"
