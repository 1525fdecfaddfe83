"""The live feed: how long a change takes to reach browsers, and how many browsers one
process can feed.

    .venv/bin/python bench/live_feed.py latency   # 2 app processes, 20 SSE clients, 500 changes
    .venv/bin/python bench/live_feed.py fanout    # 1 app process, 1,000 SSE clients, 30 changes
    .venv/bin/python bench/live_feed.py fanout --clients 200 --changes 50 --json

On a scratch PostgreSQL database (BENCH_PG_URL, default postgresql://postgres@127.0.0.1:5432;
created with a random name, dropped at the end), with real `webapp serve` processes. A
change is an audit row about a request (what every request change writes), committed by
this script at a steady rate; its latency is the time from the commit to the arrival of
its SSE event (the one with the audit id, sent after the row and toast messages) at each
client, on this machine's clock. The baseline, in the same run, is a bare psycopg client
that LISTENs to the same NOTIFY: the floor any PostgreSQL-woken feed pays. Aims (issue 5):
p95 under 150 ms across two processes; with 1,000 clients p99 under 1 s and the server
under 300 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from served_app import ServedApp, cpu_seconds  # noqa: E402

from webapp.core.db import Database  # noqa: E402
from webapp.core.migrate import upgrade  # noqa: E402
from webapp.core.models import AccessRequest, Resource, ResourceApprover, utcnow  # noqa: E402
from webapp.services.accounts import create_user  # noqa: E402
from webapp.services.audit import NOTIFY_CHANNEL, record_event  # noqa: E402
from webapp.services.identity import Principal, issue_token  # noqa: E402

SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def url_for(database: str) -> str:
    return make_url(SERVER).set(database=database).render_as_string(hide_password=False)


def admin_engine() -> sa.Engine:
    return sa.create_engine(url_for("postgres"), isolation_level="AUTOCOMMIT")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"n": len(values), "p50_ms": percentile(values, 50) * 1000, "p95_ms": percentile(values, 95) * 1000,
            "p99_ms": percentile(values, 99) * 1000, "max_ms": max(values) * 1000,
            "mean_ms": statistics.fmean(values) * 1000}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def prepare(url: str) -> tuple[str, int]:
    """An admin with a token, and one pending request: (token, request id)."""
    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            admin = create_user(session, email="bench@example.test", name="Bench Admin", password=None, role="admin")
            member = create_user(session, email="mo@example.test", name="Mo Member", password=None, role="member")
            resource = Resource(name="bench-db", kind="database")
            session.add(resource)
            session.flush()
            session.add(ResourceApprover(resource_id=resource.id, user_id=admin.id))  # type: ignore[arg-type]
            request = AccessRequest(requester_id=member.id, resource_id=resource.id,  # type: ignore[arg-type]
                                    reason="Benchmarking the live feed.", workflow_id="bench-live")
            session.add(request)
            session.flush()
            issuer = Principal(admin.id, admin.email, admin.name, admin.role)  # type: ignore[arg-type]
            _, token = issue_token(session, user=admin, name="bench", issued_by=issuer, now=utcnow())
            return token, request.id  # type: ignore[return-value]
    finally:
        database.dispose()


class Arrivals:
    """When each client saw each audit id."""

    def __init__(self) -> None:
        self.seen: dict[int, list[float]] = {}
        self.connected = 0
        self.failures: list[str] = []

    def add(self, event_id: int) -> None:
        self.seen.setdefault(event_id, []).append(time.time())


async def sse_client(client: httpx.AsyncClient, url: str, token: str, arrivals: Arrivals, stop: asyncio.Event) -> None:
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        async with client.stream("GET", f"{url}/events", headers=headers) as response:
            if response.status_code != 200:
                arrivals.failures.append(f"HTTP {response.status_code}")
                return
            arrivals.connected += 1
            async for line in response.aiter_lines():
                if line.startswith("id:"):
                    arrivals.add(int(line[3:].strip()))
                if stop.is_set():
                    return
    except (httpx.HTTPError, asyncio.CancelledError) as error:
        if not stop.is_set():
            arrivals.failures.append(f"{type(error).__name__}: {error}")


def notify_listener(url: str, arrivals: Arrivals, ready: threading.Event, stop: threading.Event) -> None:
    """The baseline: a bare LISTEN on the feed's channel; each NOTIFY is one commit."""
    with psycopg.connect(url.replace("postgresql+psycopg", "postgresql"), autocommit=True) as conn:
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        ready.set()
        while not stop.is_set():
            for _ in conn.notifies(timeout=0.2):
                arrivals.add(-1)


def write_changes(url: str, request_id: int, count: int, rate: float) -> dict[int, float]:
    """`count` audit rows about the request, `rate` a second; commit time by id."""
    database = Database(url)
    committed: dict[int, float] = {}
    try:
        began = time.monotonic()
        for n in range(count):
            delay = began + n / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            with database.session() as session:
                event = record_event(session, actor="bench", action="request.approval_recorded",
                                     subject=f"request:{request_id}", details={"n": n})
                event_id = event.id
            committed[event_id] = time.time()  # type: ignore[index]
    finally:
        database.dispose()
    return committed


async def measure(apps: list[ServedApp], token: str, url: str, request_id: int, clients: int, changes: int,
                  rate: float) -> dict[str, Any]:
    arrivals, baseline = Arrivals(), Arrivals()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
    listener_ready, listener_stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=notify_listener, args=(url, baseline, listener_ready, listener_stop))
    listener.start()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(sse_client(client, apps[i % len(apps)].base_url, token, arrivals, stop))
                 for i in range(clients)]
        deadline = time.monotonic() + 60
        while arrivals.connected + len(arrivals.failures) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        listener_ready.wait(10)
        await asyncio.sleep(1.0)  # let every stream reach its live tail
        peak_rss = {app.proc.pid: rss_mb(app.proc.pid) for app in apps}
        sampling = True

        async def sample_rss() -> None:
            while sampling:
                for app in apps:
                    peak_rss[app.proc.pid] = max(peak_rss[app.proc.pid], rss_mb(app.proc.pid))
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample_rss())
        cpu_before = {app.proc.pid: cpu_seconds(app.proc.pid) for app in apps}
        client_before, wall_before = time.process_time(), time.monotonic()
        committed = await asyncio.to_thread(write_changes, url, request_id, changes, rate)
        last = max(committed)
        deadline = time.monotonic() + 30
        while len(arrivals.seen.get(last, [])) < arrivals.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        sampling = False
        await sampler
        wall = time.monotonic() - wall_before
        server_cpu = {str(pid): round((cpu_seconds(pid) - before) / wall * 100) for pid, before in cpu_before.items()}
        client_cpu = round((time.process_time() - client_before) / wall * 100)
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    listener_stop.set()
    listener.join()
    latencies = [arrived - committed[event_id] for event_id, times in arrivals.seen.items()
                 if event_id in committed for arrived in times]
    expected = len(committed) * arrivals.connected
    baseline_times = sorted(baseline.seen.get(-1, []))
    commit_times = sorted(committed.values())
    floor = [b - c for b, c in zip(baseline_times, commit_times, strict=False)]  # in commit order
    return {"clients": clients, "connected": arrivals.connected, "failures": arrivals.failures[:5],
            "changes": len(committed), "delivered": len(latencies), "expected": expected,
            "app": summary(latencies) if latencies else None, "notify_floor": summary(floor) if floor else None,
            "server_rss_mb": {str(pid): round(mb, 1) for pid, mb in peak_rss.items()},
            "server_cpu_percent": server_cpu, "client_cpu_percent": client_cpu}


def report(mode: str, result: dict[str, Any]) -> None:
    app, floor = result["app"], result["notify_floor"]
    print(f"\n{mode}: {result['clients']} SSE clients ({result['connected']} connected), "
          f"{result['changes']} changes, {result['delivered']}/{result['expected']} deliveries")
    if result["failures"]:
        print("  failures:", result["failures"])
    for label, s in (("app (commit -> SSE event)", app), ("bare LISTEN/NOTIFY floor", floor)):
        if s:
            print(f"  {label:28} p50 {s['p50_ms']:7.1f} ms  p95 {s['p95_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms"
                  f"  max {s['max_ms']:7.1f} ms")
    if app and floor:  # the floor is near zero, so a ratio would say nothing: the difference
        print(f"  the app adds over the floor: p50 {app['p50_ms'] - floor['p50_ms']:+.1f} ms, "
              f"p95 {app['p95_ms'] - floor['p95_ms']:+.1f} ms, p99 {app['p99_ms'] - floor['p99_ms']:+.1f} ms")
    print(f"  peak server RSS: {', '.join(f'{mb} MB' for mb in result['server_rss_mb'].values())}; "
          f"CPU (% of one core) server {', '.join(f'{c}%' for c in result['server_cpu_percent'].values())}, "
          f"this client {result['client_cpu_percent']}%")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["latency", "fanout"])
    parser.add_argument("--clients", type=int)
    parser.add_argument("--changes", type=int)
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second")
    parser.add_argument("--json", action="store_true", help="also write bench/results/live_feed_<mode>.json")
    args = parser.parse_args()
    processes = 2 if args.mode == "latency" else 1
    clients = args.clients or (20 if args.mode == "latency" else 1000)
    changes = args.changes or (500 if args.mode == "latency" else 30)
    rate = args.rate if args.mode == "latency" else min(args.rate, 5.0)
    name = f"gh_bench_live_{uuid.uuid4().hex[:8]}"
    with admin_engine().connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = url_for(name)
    apps: list[ServedApp] = []
    try:
        token, request_id = prepare(url)
        with tempfile.TemporaryDirectory() as workdir:
            for n in range(processes):
                apps.append(ServedApp(url, f"bench-live-{n}", Path(workdir)))
            result = asyncio.run(measure(apps, token, url, request_id, clients, changes, rate))
            for app in apps:
                app.stop()
            apps.clear()
    finally:
        for app in apps:
            app.stop()
        with admin_engine().connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    result.update(mode=args.mode, processes=processes, rate=rate)
    report(args.mode, result)
    if args.json:
        out = REPO / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        (out / f"live_feed_{args.mode}.json").write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
