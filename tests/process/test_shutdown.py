"""POST /ops/shutdown against a real server process: it answers, stops the way its process
manager would stop it, and starts again."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from support.processes import AppProcess, app_env
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import AuditEvent, User


def audit_details(database: Database, action: str) -> list[dict[str, Any]]:
    with database.session() as session:
        return [e.details for e in session.scalars(sa.select(AuditEvent).where(AuditEvent.action == action))]


def open_stream(base_url: str, headers: dict[str, str]) -> threading.Thread:
    """A client reading /events until the server ends the stream; returns once it is open."""
    opened = threading.Event()

    def read() -> None:
        with httpx.stream("GET", f"{base_url}/events", headers={**headers, "Accept": "text/event-stream"},
                          timeout=httpx.Timeout(5, read=60)) as response:
            assert response.status_code == 200
            opened.set()
            try:
                for _ in response.iter_bytes():
                    pass
            except httpx.TransportError:
                pass

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    assert opened.wait(10), "the stream opened"
    return thread


def test_shutdown_stops_a_real_server_gracefully(settings: Settings, database: Database, people: dict[str, Any],
                                                 tmp_path: Path) -> None:
    with database.session() as session:
        admin = session.get(User, people["admin"].id)
        _, token = personal_token(session, admin, name="ops")  # type: ignore[arg-type]
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    with (tmp_path / "app.log").open("w") as log:
        server = AppProcess(app_env(settings, EXECUTOR_ID="stopper"), log, cwd=tmp_path)
        server.start()
        try:
            assert server.http.post("/ops/shutdown", headers=headers, data={"reason": ""}).status_code == 422
            streams = [open_stream(server.base_url, headers) for _ in range(2)]  # browsers left open
            answer = server.http.post("/ops/shutdown", headers=headers, data={"reason": "new config"})
            assert answer.status_code == 202 and answer.json()["executor_id"] == "stopper"
            assert server.proc is not None
            wait_for(lambda: server.proc.poll() is not None, what="the server to exit", timeout=30)  # type: ignore[union-attr]
            for stream in streams:
                stream.join(timeout=10)
                assert not stream.is_alive(), "the stream ended with the server"
            # uvicorn re-raises the SIGTERM it handled once it has shut down, as after a process manager's stop
            assert server.proc.returncode in (0, -signal.SIGTERM)
            try:
                httpx.get(f"{server.base_url}/healthz", timeout=2)
                raise AssertionError("the port still answers")
            except httpx.TransportError:
                pass
            server.start()  # what the process manager does
            assert server.http.get("/readyz").status_code == 200
        finally:
            server.stop()
    assert audit_details(database, "ops.shutdown") == [{"reason": "new config"}]
    logged = (tmp_path / "app.log").read_text()
    assert "shutdown requested" in logged and "Traceback" not in logged
    assert "ASGI callable returned without completing response" not in logged, "streams are closed cleanly"
