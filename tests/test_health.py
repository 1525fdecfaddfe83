"""Liveness and readiness, as a load balancer and an operator with curl see them."""

from __future__ import annotations

import time

from starlette.testclient import TestClient

from support.network import black_hole
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database


def test_healthz_answers_while_the_process_serves(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_checks_both_databases(client: TestClient) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "dbos": "ok"}}
    assert response.headers["cache-control"] == "no-store"


def test_readyz_says_which_database_is_gone(client: TestClient) -> None:
    app = client.app
    healthy = app.state.db  # type: ignore[attr-defined]
    # Nothing listens on port 1: the app database is unreachable, as after a server crash.
    app.state.db = Database("postgresql://postgres@127.0.0.1:1/gone")  # type: ignore[attr-defined]
    try:
        response = client.get("/readyz")
    finally:
        app.state.db.dispose()  # type: ignore[attr-defined]
        app.state.db = healthy  # type: ignore[attr-defined]
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["dbos"] == "ok"
    assert body["checks"]["database"].startswith("error: OperationalError")


def test_readyz_fails_when_dbos_is_down(client: TestClient) -> None:
    from dbos import DBOS

    DBOS.destroy()
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "dbos": "error: RuntimeError: DBOS is not launched"}


def test_readyz_answers_within_its_timeout_when_a_database_hangs(settings: Settings) -> None:
    """A database that accepts and never answers must not hold a probe for long: the checks
    run at once, each bounded by READY_TIMEOUT_SECONDS."""
    with black_hole() as port, TestClient(create_app(settings.model_copy(update={"ready_timeout_seconds": 1.0}))) as client:
        healthy = client.app.state.db  # type: ignore[attr-defined]
        client.app.state.db = Database(f"postgresql://postgres@127.0.0.1:{port}/hangs")  # type: ignore[attr-defined]
        try:
            began = time.monotonic()
            response = client.get("/readyz")
            took = time.monotonic() - began
        finally:
            client.app.state.db = healthy  # type: ignore[attr-defined]
    assert response.status_code == 503 and took < 1.8, f"answered after {took:.1f} s"
    assert response.json()["checks"] == {"database": "error: no answer within 1 s", "dbos": "ok"}
