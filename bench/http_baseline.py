"""HTTP baseline: how much does Gatehouse cost over a bare Starlette app?

One run starts two real uvicorn servers on free loopback ports, each in its own process:

  bare  a Starlette app with one route returning PlainTextResponse("ok")
  app   Gatehouse itself (`create_app`), on a migrated and seeded SQLite file in a
        temporary directory (or on BENCH_DATABASE_URL if set)

then drives them one at a time with a closed-loop HTTP/1.1 keep-alive load generator
(httpx.AsyncClient, --concurrency workers, --duration seconds after a 1 s warm-up) and
prints throughput, latency percentiles and errors for:

  bare /        the floor: uvicorn + Starlette + the load generator
  app /healthz  the app's middleware stack around a trivial JSON route
  app /         the full home page (database reads + template rendering)

    .venv/bin/python bench/http_baseline.py [--duration 5] [--concurrency 32] [--json]

The load generator is Python too and shares the machine with the server, so the cheap
targets are usually bounded by the client (cli cpu near 100%, srv cpu well below): their
req/s ratio then says little. `srv us/req` (server CPU time per request, from /proc on
Linux) does not depend on the client and is the fairer cost comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import AsyncExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_FILE = BENCH_DIR / "results" / "http_baseline.json"
LOOPBACK = "127.0.0.1"
WARMUP_SECONDS = 1.0
REQUEST_TIMEOUT_SECONDS = 10.0
STARTUP_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 20.0  # the app gives DBOS up to 10 s to finish running work


# --- server factories (imported by `python -m uvicorn --factory` in the subprocesses) -------


def bare_app():  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def ok(request):  # type: ignore[no-untyped-def]
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/", ok)])


def gatehouse_app():  # type: ignore[no-untyped-def]
    from webapp.app import create_app
    from webapp.config import Settings

    return create_app(Settings())  # DATABASE_URL, ENV, ... come from the environment


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def cpu_seconds(self) -> float | None:
        """User + system CPU time of the server process (Linux /proc), None elsewhere."""
        try:
            fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError):
            return None


def start_server(name: str, factory: str, env: dict[str, str], workdir: Path) -> Server:
    port = free_port()
    log_path = workdir / f"{name}.log"
    command = [
        sys.executable, "-m", "uvicorn", "--factory", f"http_baseline:{factory}",
        "--app-dir", str(BENCH_DIR), "--host", LOOPBACK, "--port", str(port),
        "--log-level", "warning", "--no-access-log",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return Server(name, process, port, log_path)


def wait_ready(server: Server, path: str) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    last_error = ""
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(
                    f"{server.name} server exited with {server.process.returncode}:\n{server.log_tail()}"
                )
            try:
                response = client.get(server.base_url + path)
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.TransportError as exc:
                last_error = type(exc).__name__
            time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {STARTUP_TIMEOUT_SECONDS:.0f} s ({last_error}):\n{server.log_tail()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is not None:
        return
    server.process.terminate()
    try:
        server.process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def child_env(**overrides: str) -> dict[str, str]:
    """The parent's environment without any Gatehouse setting (a developer's SLACK_WEBHOOK_URL
    must not leak into a benchmark), plus the given ones."""
    from webapp.config import Settings

    settings_names = {name.upper() for name in Settings.model_fields}
    env = {key: value for key, value in os.environ.items() if key.upper() not in settings_names}
    pythonpath = [str(ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env.update(overrides)
    return env


def prepare_database(url: str) -> tuple[int, str]:
    """Migrate, and seed the demo organisation unless the database already has users.
    Returns the number of demo logins created (0 when the data was already there) and an
    API token of a demo member, so page requests are signed in as a browser's would be."""
    import sqlalchemy as sa

    from webapp.core.db import Database
    from webapp.core.migrate import upgrade
    from webapp.core.models import User, utcnow
    from webapp.services.demo import database_has_users, seed_demo
    from webapp.services.identity import Principal, issue_token

    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            seeded = 0 if database_has_users(session) else len(seed_demo(session))
            user = session.scalars(sa.select(User).where(User.active).order_by(User.id)).first()
            issuer = Principal(user.id, user.email, user.name, user.role)  # type: ignore[arg-type, union-attr]
            _token, secret = issue_token(session, user=user, name="bench", issued_by=issuer, now=utcnow())  # type: ignore[arg-type]
            return seeded, secret
    finally:
        database.dispose()


# --- load generator ------------------------------------------------------------------------


@dataclass
class Result:
    target: str
    url: str
    concurrency: int
    duration_s: float
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    response_bytes: int
    server_cpu_pct: float | None
    server_cpu_us_per_request: float | None
    client_cpu_pct: float
    error_samples: list[str] = field(default_factory=list)


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def drive(
    clients: list[httpx.AsyncClient], url: str, seconds: float, max_requests: int
) -> tuple[list[float], int, list[str], float]:
    """Closed loop: one worker per client, each sending one request at a time until the
    deadline or until `max_requests` were sent. Returns latencies (s), errors, error
    samples and the elapsed seconds."""
    latencies: list[float] = []
    errors = 0
    samples: list[str] = []
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors, sent
        while sent < max_requests and time.perf_counter() < deadline:
            sent += 1
            began = time.perf_counter()
            try:
                response = await client.get(url)
                await response.aread()
                ok = response.status_code == 200
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok, problem = False, f"{type(exc).__name__}: {exc}"
            if ok:
                latencies.append(time.perf_counter() - began)
            else:
                errors += 1
                if len(samples) < 5:
                    samples.append(problem)

    await asyncio.gather(*(worker(client) for client in clients))
    return latencies, errors, samples, time.perf_counter() - start


async def measure(
    target: str, server: Server, path: str, concurrency: int, duration: float, max_requests: int,
    headers: dict[str, str] | None = None,
) -> Result:
    url = server.base_url + path
    # One client (one keep-alive connection) per worker: a single client shared by many
    # workers spends more time in its connection pool than the server spends on a request.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    timeout = httpx.Timeout(REQUEST_TIMEOUT_SECONDS)
    async with AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(
                httpx.AsyncClient(http1=True, http2=False, limits=limits, timeout=timeout, headers=headers)
            )
            for _ in range(concurrency)
        ]
        probe = await clients[0].get(url)
        if probe.status_code != 200:
            raise RuntimeError(f"{target}: GET {url} answered {probe.status_code}: {probe.text[:300]}")
        await drive(clients, url, WARMUP_SECONDS, max_requests)  # also opens the connections
        cpu_before, client_before = server.cpu_seconds(), time.process_time()
        latencies, errors, samples, elapsed = await drive(clients, url, duration, max_requests)
        cpu_after, client_after = server.cpu_seconds(), time.process_time()
    latencies.sort()
    completed = len(latencies) + errors
    server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Result(
        target=target,
        url=url,
        concurrency=concurrency,
        duration_s=round(elapsed, 3),
        requests=completed,
        errors=errors,
        rps=round(len(latencies) / elapsed, 1),
        p50_ms=round(1000 * percentile(latencies, 50), 2),
        p95_ms=round(1000 * percentile(latencies, 95), 2),
        p99_ms=round(1000 * percentile(latencies, 99), 2),
        max_ms=round(1000 * latencies[-1], 2) if latencies else 0.0,
        response_bytes=len(probe.content),
        server_cpu_pct=None if server_cpu is None else round(100 * server_cpu / elapsed, 1),
        server_cpu_us_per_request=(
            round(1e6 * server_cpu / completed, 1) if server_cpu is not None and completed else None
        ),
        client_cpu_pct=round(100 * (client_after - client_before) / elapsed, 1),
        error_samples=samples,
    )


def run_loop(coroutine: Coroutine[Any, Any, T]) -> T:
    """uvloop (installed with uvicorn[standard]) makes the client cheaper; asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def client_loop_name() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


# --- report --------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator is not None and denominator else None


def ratios(results: dict[str, Result]) -> dict[str, float | None]:
    bare, healthz, page = results["bare /"], results["app /healthz"], results["app /"]
    return {
        "healthz_over_bare_rps": ratio(healthz.rps, bare.rps),
        "page_over_bare_rps": ratio(page.rps, bare.rps),
        "healthz_over_bare_p95": ratio(healthz.p95_ms, bare.p95_ms),
        "page_over_bare_p95": ratio(page.p95_ms, bare.p95_ms),
        "healthz_over_bare_server_cpu_per_request": ratio(
            healthz.server_cpu_us_per_request, bare.server_cpu_us_per_request
        ),
        "page_over_bare_server_cpu_per_request": ratio(
            page.server_cpu_us_per_request, bare.server_cpu_us_per_request
        ),
    }


def print_table(results: dict[str, Result]) -> None:
    header = f"{'target':<14}{'requests':>10}{'req/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>8}{'srv cpu':>9}{'srv us/req':>11}{'cli cpu':>9}{'bytes':>8}"
    print(header)
    print("-" * len(header))
    for result in results.values():
        server_cpu = "n/a" if result.server_cpu_pct is None else f"{result.server_cpu_pct:.0f}%"
        per_request = "n/a" if result.server_cpu_us_per_request is None else f"{result.server_cpu_us_per_request:.0f}"
        print(
            f"{result.target:<14}{result.requests:>10}{result.rps:>10.0f}{result.p50_ms:>9.2f}"
            f"{result.p95_ms:>9.2f}{result.p99_ms:>9.2f}{result.errors:>8}{server_cpu:>9}{per_request:>11}"
            f"{result.client_cpu_pct:>8.0f}%{result.response_bytes:>8}"
        )
        for sample in result.error_samples:
            print(f"    error: {sample}")
    print()
    for name, value in ratios(results).items():
        print(f"{name:<42}{'n/a' if value is None else f'{value:.3f}'}")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


# --- main ----------------------------------------------------------------------------------


@contextmanager
def servers(workdir: Path, database_url: str) -> Iterator[tuple[Server, Server]]:
    started: list[Server] = []
    try:
        bare = start_server("bare", "bare_app", child_env(), workdir)
        started.append(bare)
        app_env = child_env(
            ENV="development", LOG_LEVEL="WARNING", EXECUTOR_ID="bench", DATABASE_URL=database_url
        )
        app = start_server("app", "gatehouse_app", app_env, workdir)
        started.append(app)
        wait_ready(bare, "/")
        wait_ready(app, "/readyz")  # the lifespan has launched DBOS and the database answers
        yield bare, app
    finally:
        for server in reversed(started):
            stop_server(server)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per target (default 5)")
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument(
        "--max-requests", type=int, default=500_000, help="stop a target after this many requests (default 500000)"
    )
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS_FILE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if not 1 <= args.concurrency <= 1024:
        parser.error("--concurrency must be in [1, 1024]")
    if args.max_requests < 1:
        parser.error("--max-requests must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        workdir = Path(tmp)
        database_url = os.environ.get("BENCH_DATABASE_URL") or f"sqlite:///{workdir / 'gatehouse.sqlite'}"
        shown_url = database_url.split("@")[-1] if "@" in database_url else database_url
        print(f"database: {shown_url}")
        seeded, token = prepare_database(database_url)
        print(f"seeded: {seeded} demo users" if seeded else "seeded: existing data kept")
        print(
            f"concurrency {args.concurrency}, {args.duration:g} s per target after a "
            f"{WARMUP_SECONDS:g} s warm-up, client loop {client_loop_name()}\n"
        )

        results: dict[str, Result] = {}
        with servers(workdir, database_url) as (bare, app):
            for target, server, path in (("bare /", bare, "/"), ("app /healthz", app, "/healthz"), ("app /", app, "/")):
                results[target] = run_loop(
                    measure(target, server, path, args.concurrency, args.duration, args.max_requests,
                            headers={"Authorization": f"Bearer {token}"} if target == "app /" else None)
                )
        print_table(results)

        if args.json:
            RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
            report = {
                "benchmark": "http_baseline",
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "commit": git_commit(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "database": "sqlite" if database_url.startswith("sqlite") else database_url.split(":", 1)[0],
                "settings": {
                    "duration_s": args.duration,
                    "concurrency": args.concurrency,
                    "warmup_s": WARMUP_SECONDS,
                    "max_requests": args.max_requests,
                    "client_loop": client_loop_name(),
                },
                "results": {name: asdict(result) for name, result in results.items()},
                "ratios": ratios(results),
            }
            RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
            print(f"\nwrote {RESULTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
