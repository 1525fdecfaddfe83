"""`python -m webapp serve` as a real process, for the tests that kill it, restart it or run
several side by side on one PostgreSQL database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx

from support.receivers import free_port
from support.waiting import wait_for
from support.web import TEST_SECRET
from webapp.config import Settings

REPO = Path(__file__).resolve().parents[2]
READY_SECONDS = 40.0


def app_env(settings: Settings, **extra: str) -> dict[str, str]:
    """This environment without any Gatehouse setting, plus the test's databases and quick
    queues; `extra` adds or overrides settings (EXECUTOR_ID, ...)."""
    names = {name.upper() for name in Settings.model_fields}
    env = {name: value for name, value in os.environ.items() if name.upper() not in names}
    env.update({
        "ENV": "development", "DATABASE_URL": settings.database_url,
        "DBOS_SYSTEM_DATABASE_URL": settings.system_database_url, "SECRET_KEY": TEST_SECRET,
        "LOG_LEVEL": "WARNING", "LOG_FORMAT": "console", "QUEUE_POLLING_INTERVAL": "0.05",
        "NOTIFY_QUEUE_POLLING_INTERVAL": "0.05", "BACKGROUND_QUEUE_POLLING_INTERVAL": "0.05",
        "SHUTDOWN_GRACE_SECONDS": "0.5", "IMPORT_ALLOWED_HOSTS": settings.import_allowed_hosts,
        "AGENT_ALLOWED_HOSTS": settings.agent_allowed_hosts, **extra,
    })
    return env


class AppProcess:
    """`python -m webapp serve` in its own process group, logging to one file across restarts."""

    def __init__(self, env: dict[str, str], log: IO[str], *, port: int | None = None, cwd: Path = REPO) -> None:
        self.port = port or free_port()
        self.env, self.log, self.cwd = env, log, cwd
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.client: httpx.Client | None = None
        self.starts = 0
        self.start_seconds: list[float] = []

    def start(self) -> None:
        began = time.monotonic()
        self.starts += 1
        self.log.write(f"\n===== start {self.starts} =====\n")
        self.log.flush()
        self._close_client()  # one left from a run that ended on its own (e.g. POST /ops/shutdown)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "webapp", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env, cwd=self.cwd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.client = httpx.Client(base_url=self.base_url, timeout=30.0)

        def ready() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"the app exited with {self.proc.returncode} while starting")
            try:
                return self.http.get("/readyz").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, what="the app to be ready", timeout=READY_SECONDS)
        self.start_seconds.append(time.monotonic() - began)

    def _close_client(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def kill(self) -> None:
        """SIGKILL to the whole group: no shutdown code runs."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self.proc = None
        self._close_client()

    def stop(self) -> None:
        """A graceful stop (SIGTERM), or a kill when it takes too long."""
        self._close_client()
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        except ProcessLookupError:
            self.proc.wait(timeout=30)
        self.proc = None

    @property
    def http(self) -> httpx.Client:
        assert self.client is not None, "the app is not running"
        return self.client
