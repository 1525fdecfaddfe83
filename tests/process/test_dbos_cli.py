"""DBOS's own tools work on Gatehouse (dbos-config.yaml): in a fresh directory with the
default settings `dbos start` serves the app and `dbos workflow list` / `steps` (no flags)
read its workflows; with DATABASE_URL or DBOS_SYSTEM_DATABASE_URL set they follow it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
from starlette.testclient import TestClient

from support.processes import REPO, AppProcess, app_env
from support.receivers import free_port
from support.waiting import wait_for
from webapp.config import Settings

BIN = Path(sys.executable).parent
GATEHOUSE = {name.upper() for name in Settings.model_fields}


def dbos(args: list[str], cwd: Path, **env: str) -> Any:
    """A `dbos` CLI command in `cwd`, with no Gatehouse setting in its environment but `env`."""
    environment = {k: v for k, v in os.environ.items() if k.upper() not in GATEHOUSE} | env
    done = subprocess.run([str(BIN / "dbos"), *args], cwd=cwd, env=environment, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def sweeps(cwd: Path, **env: str) -> list[dict[str, Any]]:
    """The sweep's finished ticks, as `dbos workflow list` shows them."""
    return [w for w in dbos(["workflow", "list"], cwd, **env)
            if w["name"] == "sweep_workflow" and w["status"] == "SUCCESS"]


def test_dbos_start_serves_and_dbos_workflow_reads_the_default_databases(tmp_path: Path) -> None:
    shutil.copy(REPO / "dbos-config.yaml", tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k.upper() not in GATEHOUSE}
    env.update(PORT=str(port), SWEEP_INTERVAL_SECONDS="1", LOG_LEVEL="WARNING", PATH=f"{BIN}{os.pathsep}{env['PATH']}")
    subprocess.run([str(BIN / "webapp"), "migrate"], cwd=tmp_path, env=env, check=True, capture_output=True)
    with (tmp_path / "start.log").open("w") as log:
        started = subprocess.Popen([str(BIN / "dbos"), "start"], cwd=tmp_path, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), timeout=40, what="dbos start to serve")
            ticks = wait_for(lambda: sweeps(tmp_path), timeout=20, what="the sweep's first tick")
            steps = dbos(["workflow", "steps", ticks[0]["workflow_id"]], tmp_path)
            names = [s["function_name"] for s in steps]
            assert names[:3] == ["announce_expiring", "grants_to_end", "overdue_requests"]
        finally:
            os.killpg(started.pid, signal.SIGTERM)
            started.wait(timeout=30)
    assert (tmp_path / "var" / "gatehouse_dbos.sqlite").exists() and not (tmp_path / "gatehouse.sqlite").exists()


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_dbos_workflow_follows_dbos_system_database_url(settings: Settings, client: TestClient, tmp_path: Path) -> None:
    """The app runs (the `client` fixture) on the test's system database; the CLI reads it."""
    shutil.copy(REPO / "dbos-config.yaml", tmp_path)
    wait_for(lambda: sweeps(tmp_path, DBOS_SYSTEM_DATABASE_URL=settings.system_database_url), timeout=20,
             what="a sweep in the test's system database")


def test_dbos_workflow_follows_database_url_on_postgresql(pg_settings: Settings, tmp_path: Path) -> None:
    """On PostgreSQL, DATABASE_URL alone puts DBOS's tables in that database; the CLI follows."""
    shutil.copy(REPO / "dbos-config.yaml", tmp_path)
    env = app_env(pg_settings, SWEEP_INTERVAL_SECONDS="1")
    del env["DBOS_SYSTEM_DATABASE_URL"]
    with (tmp_path / "app.log").open("w") as log:
        server = AppProcess(env, log, cwd=tmp_path)
        server.start()
        try:
            wait_for(lambda: sweeps(tmp_path, DATABASE_URL=pg_settings.database_url), timeout=20,
                     what="a sweep in the app database's dbos schema")
        finally:
            server.stop()
