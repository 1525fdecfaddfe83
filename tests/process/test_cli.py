"""The `webapp` command as an operator runs it, in a real subprocess on a fresh directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from support.processes import AppProcess, app_env
from support.receivers import free_port
from webapp.config import Settings


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "ENV", "SECRET_KEY")}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "webapp", *args], cwd=cwd, env=environment,
        capture_output=True, text=True, timeout=120,
    )


def test_migrate_seed_and_create_user_on_a_fresh_directory(tmp_path: Path) -> None:
    migrated = run(["migrate"], tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert (tmp_path / "var" / "gatehouse.sqlite").exists()

    seeded = run(["seed-demo"], tmp_path)
    assert seeded.returncode == 0, seeded.stderr
    assert "password: gatehouse-demo" in seeded.stdout
    assert "admin    ada.okafor@example.com" in seeded.stdout

    again = run(["seed-demo"], tmp_path)
    assert "already has users" in again.stdout
    assert "admin    ada.okafor@example.com" in again.stdout  # make run prints the logins every time

    created = run(["create-user", "--email", "New.Person@Example.com", "--name", "New Person",
                   "--role", "approver", "--password", "a-long-enough-password"], tmp_path)
    assert created.returncode == 0, created.stderr
    assert "created approver new.person@example.com" in created.stdout

    duplicate = run(["create-user", "--email", "new.person@example.com", "--name", "X",
                     "--password", "a-long-enough-password"], tmp_path)
    assert duplicate.returncode == 1
    assert "already exists" in duplicate.stderr

    weak = run(["create-user", "--email", "weak@example.com", "--name", "W", "--password", "short"], tmp_path)
    assert weak.returncode == 1 and "at least 12 characters" in weak.stderr

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'var' / 'gatehouse.sqlite'}")
    try:
        with engine.connect() as conn:
            users = conn.execute(sa.text("SELECT count(*) FROM users")).scalar_one()
            roles = dict(conn.execute(sa.text("SELECT email, role FROM users")).all())
    finally:
        engine.dispose()
    assert users == 31
    assert roles["new.person@example.com"] == "approver"


def test_seed_demo_is_refused_in_production(tmp_path: Path) -> None:
    result = run(["seed-demo"], tmp_path, ENV="production", SECRET_KEY="s" * 40, EXECUTOR_ID="p1",
                 BASE_URL="https://gate.example.org")
    assert result.returncode == 2
    assert "refusing to seed demo data" in result.stderr


def test_production_start_without_secret_exits_with_one_clear_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SECRET_KEY", "DATABASE_URL")}
    env["ENV"] = "production"
    result = subprocess.run(
        [sys.executable, "-m", "webapp", "serve"], cwd=tmp_path, env=env,
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines == ["gatehouse: configuration error: SECRET_KEY is not set; "
                     "production needs a random secret of 32+ characters"]


def test_a_second_server_on_one_sqlite_file_is_refused(settings: Settings, on_postgres: bool, tmp_path: Path) -> None:
    """Two processes on one SQLite file would each run the other's queued work: the second
    one says so and stops; once the first has stopped, a server starts again."""
    if on_postgres:
        pytest.skip("several processes on one PostgreSQL database are the supported set-up")
    env = app_env(settings, EXECUTOR_ID="first")
    with (tmp_path / "first.log").open("w") as log:
        first = AppProcess(env, log, cwd=tmp_path)
        first.start()
        pid = first.proc.pid if first.proc else None
        try:
            second = subprocess.run([sys.executable, "-m", "webapp", "serve", "--port", str(free_port())],
                                    cwd=tmp_path, env={**env, "EXECUTOR_ID": "second"}, capture_output=True, text=True,
                                    timeout=60)
            assert first.http.get("/healthz").status_code == 200, "the first one serves on"
        finally:
            first.stop()
        assert second.returncode == 2
        database = settings.database_url.removeprefix("sqlite:///")
        assert second.stderr.strip().splitlines() == [
            f"gatehouse: pid {pid} already serves {database}; SQLite takes one "
            "server. Stop it first, or use PostgreSQL (DATABASE_URL) to run several."]
        first.start()  # the lock went with the process
        first.stop()
