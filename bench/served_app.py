"""What the benchmarks that need a real server share: `python -m webapp serve` on a free
port in its own process group, and the /proc readings they measure it by."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

READY_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status_kb(pid: int | str, field: str) -> int:
    """A /proc/<pid>/status field in kB (VmRSS, VmHWM, ...)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def wait_until_ready(server: ServedApp | Any, name: str, seconds: float = READY_SECONDS) -> None:
    """Until `server` (with base_url, proc, log and stop()) answers /readyz; else stop it and
    say why, with the end of its log."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{server.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise SystemExit(f"{name} did not start:\n{Path(server.log.name).read_text()[-3000:]}")
        time.sleep(0.1)


class ServedApp:
    """The app under test, started with only the settings given (plus quiet logging), ready
    when /readyz answers 200; `stop()` sends SIGTERM as a process manager would."""

    def __init__(self, url: str, executor_id: str, workdir: Path, *, secret_key: str = "bench-" + "x" * 40,
                 extra: dict[str, str] | None = None) -> None:
        from webapp.config import Settings

        names = {name.upper() for name in Settings.model_fields}
        env = {k: v for k, v in os.environ.items() if k.upper() not in names}
        env.update({"ENV": "development", "DATABASE_URL": url, "SECRET_KEY": secret_key, "EXECUTOR_ID": executor_id,
                    "LOG_LEVEL": "WARNING", "LOG_FORMAT": "console", "SHUTDOWN_GRACE_SECONDS": "0.5", **(extra or {})})
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / f"{executor_id}.log").open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "webapp", "serve", "--host", "127.0.0.1",
                                      "--port", self.base_url.rsplit(":", 1)[1]], env=env, cwd=workdir,
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_ready(self, executor_id)

    @property
    def http(self) -> httpx.Client:
        """A keep-alive client to the app, made on first use."""
        if getattr(self, "_client", None) is None:
            self._client = httpx.Client(base_url=self.base_url, timeout=30)
        return self._client

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self.log.close()
