"""WORKERS (issue 12.3): `webapp serve` runs that many uvicorn processes behind one port,
each its own DBOS executor with a stable id, restarted when it dies, all stopped by one
SIGTERM. Real processes; PostgreSQL for the pool, and the refusal on SQLite."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support.processes import REPO, AppProcess, app_env
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import ExecutorHeartbeat, User


def beats(database: Database) -> dict[str, int]:
    with database.session() as session:
        return {b.executor_id: b.pid for b in session.scalars(sa.select(ExecutorHeartbeat))}


def answering_executor(base_url: str, token: str) -> str:
    """The executor that served this request (a new connection each time)."""
    rows = httpx.get(f"{base_url}/ops/executors", headers={"Authorization": f"Bearer {token}",
                                                              "Accept": "application/json"}, timeout=10).json()
    return next(r["executor_id"] for r in rows["executors"] if r["this_process"])


@pytest.mark.slow
def test_workers_are_executors_of_their_own_behind_one_port(pg_settings: Settings, database: Database,
                                                           people: dict[str, Any], tmp_path: Path) -> None:
    with database.session() as session:
        _, token = personal_token(session, session.get(User, people["admin"].id), scopes=["read"])  # type: ignore[arg-type]
    with (tmp_path / "pool.log").open("w") as log:
        pool = AppProcess(app_env(pg_settings, EXECUTOR_ID="pool", WORKERS="2"), log, cwd=tmp_path)
        pool.start()
        try:
            assert pool.proc is not None
            found = wait_for(lambda: (lambda b: b if {"pool", "pool-2"} <= set(b) else None)(beats(database)),
                             what="both workers' heartbeats", timeout=30)
            assert found["pool"] != found["pool-2"] and pool.proc.pid not in found.values()

            served = {answering_executor(pool.base_url, token) for _ in range(40)}
            assert served == {"pool", "pool-2"}, "one port, both workers answer"

            os.kill(found["pool-2"], signal.SIGKILL)  # a worker dies: the supervisor starts it again
            wait_for(lambda: beats(database).get("pool-2") not in (None, found["pool-2"]),
                     what="worker 2 back under its executor id", timeout=40)
            assert pool.proc.poll() is None and beats(database)["pool"] == found["pool"]

            pool.proc.send_signal(signal.SIGTERM)  # the supervisor alone: it stops its workers
            assert pool.proc.wait(timeout=40) == 0
            for pid in beats(database).values():
                with pytest.raises(ProcessLookupError):
                    os.kill(pid, 0)
            with pytest.raises(httpx.TransportError):
                httpx.get(f"{pool.base_url}/healthz", timeout=2)
            pool.proc = None
        finally:
            pool.stop()
    assert "Traceback" not in (tmp_path / "pool.log").read_text()


def test_several_workers_on_sqlite_are_refused(settings: Settings, tmp_path: Path) -> None:
    env = app_env(settings, WORKERS="3", DATABASE_URL=f"sqlite:///{tmp_path / 'app.sqlite'}",
                  DBOS_SYSTEM_DATABASE_URL=f"sqlite:///{tmp_path / 'app_dbos.sqlite'}")
    done = subprocess.run([sys.executable, "-m", "webapp", "serve", "--port", "0"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "WORKERS=3 needs PostgreSQL" in done.stderr
