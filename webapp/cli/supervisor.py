"""`webapp serve` with WORKERS > 1: one listening socket, WORKERS uvicorn processes.

uvicorn's own `--workers` gives every process the same environment, so every process would
be the same DBOS executor and recover the others' workflows as its own. Here each worker is
its own executor, with a stable id derived from EXECUTOR_ID (worker 1 keeps it as is, so a
move from one process to several strands nothing; worker i is `<EXECUTOR_ID>-<i>`), and
its own DBOS. The supervisor binds the socket, starts `webapp serve --worker i --fd N` for
each, restarts a worker that dies (its executor id recovers its workflows), and on SIGTERM
or SIGINT stops them all gracefully. PostgreSQL only: SQLite takes one process.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

from webapp.config import Settings

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
RESTART_MIN_SECONDS = 1.0
RESTART_MAX_SECONDS = 30.0
STEADY_SECONDS = 60.0  # a worker up this long is healthy again: its restart delay resets
STOP_SECONDS = 30.0  # after SIGTERM, how long workers have before they are killed


def worker_executor_id(base: str, number: int) -> str:
    """Worker 1 keeps EXECUTOR_ID; worker i is `<EXECUTOR_ID>-<i>`."""
    return base if number == 1 else f"{base}-{number}"


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@dataclass
class Worker:
    number: int
    executor_id: str
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    delay: float = RESTART_MIN_SECONDS
    restart_at: float | None = None


@dataclass
class Supervisor:
    settings: Settings
    sock: socket.socket
    access_log: bool = False
    workers: list[Worker] = field(default_factory=list)
    stopping: bool = False

    def start_worker(self, worker: Worker) -> None:
        command = [sys.executable, "-m", "webapp", "serve", "--worker", str(worker.number),
                   "--fd", str(self.sock.fileno())]
        if self.access_log:
            command.append("--access-log")
        env = {**os.environ, "EXECUTOR_ID": worker.executor_id}
        worker.process = subprocess.Popen(command, env=env, pass_fds=(self.sock.fileno(),))
        worker.started_at, worker.restart_at = time.monotonic(), None
        log.info("worker %s started", worker.number, extra={"executor_id": worker.executor_id,
                                                             "pid": worker.process.pid})

    def notice_exits(self) -> None:
        """Schedule a restart for each worker that exited, waiting longer each time it
        dies young, so a worker that cannot start does not spin."""
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is None or worker.process.poll() is None:
                continue
            code = worker.process.returncode
            worker.process = None
            if now - worker.started_at >= STEADY_SECONDS:
                worker.delay = RESTART_MIN_SECONDS
            worker.restart_at = now + worker.delay
            log.warning("worker %s exited with %s; restarting it in %.0f s", worker.number, code, worker.delay,
                        extra={"executor_id": worker.executor_id})
            worker.delay = min(worker.delay * 2, RESTART_MAX_SECONDS)

    def restart_due(self) -> None:
        now = time.monotonic()
        for worker in self.workers:
            if worker.process is None and worker.restart_at is not None and now >= worker.restart_at:
                self.start_worker(worker)

    def stop(self, *_args: object) -> None:
        self.stopping = True

    def stop_workers(self) -> None:
        running = [w.process for w in self.workers if w.process is not None and w.process.poll() is None]
        for process in running:
            process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.workers = [Worker(i, worker_executor_id(self.settings.executor_id, i))
                        for i in range(1, self.settings.workers + 1)]
        for worker in self.workers:
            self.start_worker(worker)
        while not self.stopping:
            self.notice_exits()
            self.restart_due()
            time.sleep(POLL_SECONDS)
        log.info("stopping %s workers", len(self.workers))
        self.stop_workers()
        self.sock.close()
        return 0


def supervise(settings: Settings, args: argparse.Namespace) -> int:
    host, port = args.host or settings.host, args.port or settings.port
    try:
        sock = bind(host, port)
    except OSError as exc:
        print(f"gatehouse: cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"gatehouse: serving http://{host}:{port} with {settings.workers} workers "
          f"(executors {', '.join(worker_executor_id(settings.executor_id, i) for i in range(1, settings.workers + 1))})",
          file=sys.stderr, flush=True)
    return Supervisor(settings, sock, access_log=args.access_log).run()
