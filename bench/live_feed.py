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
import re
import statistics
import subprocess
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

from served_app import ServedApp, cpu_seconds, free_port, wait_until_ready  # noqa: E402

from webapp.core.db import Database  # noqa: E402
from webapp.core.migrate import upgrade  # noqa: E402
from webapp.core.models import AccessRequest, Resource, ResourceApprover, utcnow  # noqa: E402
from webapp.services.accounts import create_user  # noqa: E402
from webapp.services.audit import NOTIFY_CHANNEL, record_event  # noqa: E402
from webapp.services.identity import Principal  # noqa: E402
from webapp.services.tokens import issue_token  # noqa: E402

SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")
SETTLE_SECONDS = float(os.environ.get("BENCH_SETTLE_SECONDS", "5"))


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


def prepare(url: str, people: int, *, all_admins: bool = False) -> tuple[list[str], int]:
    """`people` who may all see one pending request, each with a token of their own (a live
    stream is per person: one each), and the request: (tokens, request id). One in ten is an
    approver of the resource, the rest are admins (all, with `all_admins`): two audiences."""
    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            member = create_user(session, email="mo@example.test", name="Mo Member", password=None, role="member")
            resource = Resource(name="bench-db", kind="database")
            session.add(resource)
            session.flush()
            tokens = []
            for n in range(people):
                role = "admin" if n % 10 or all_admins else "approver"
                person = create_user(session, email=f"viewer{n}@example.test", name=f"Viewer {n}", password=None,
                                     role=role)
                if role == "approver":
                    session.add(ResourceApprover(resource_id=resource.id, user_id=person.id))  # type: ignore[arg-type]
                issuer = Principal(person.id, person.email, person.name, person.role)  # type: ignore[arg-type]
                tokens.append(issue_token(session, user=person, name="bench", issued_by=issuer, now=utcnow())[1])
            request = AccessRequest(requester_id=member.id, resource_id=resource.id,  # type: ignore[arg-type]
                                    reason="Benchmarking the live feed.", workflow_id="bench-live")
            session.add(request)
            session.flush()
            return tokens, request.id  # type: ignore[return-value]
    finally:
        database.dispose()


class Arrivals:
    """When each client saw each audit id, and how many bytes of events they read."""

    def __init__(self) -> None:
        self.seen: dict[int, list[float]] = {}
        self.connected = 0
        self.failures: list[str] = []
        self.bytes = 0

    def add(self, event_id: int) -> None:
        self.seen.setdefault(event_id, []).append(time.time())


ID_LINE = re.compile(rb"^id: ?(\d+)\r?$", re.M)


async def sse_client(client: httpx.AsyncClient, url: str, token: str, arrivals: Arrivals, stop: asyncio.Event) -> None:
    """One browser tab: notes when each event's id line arrives. Reads raw chunks and finds the
    id lines with a regular expression, so the client's own cost hardly depends on how many
    lines an event has (a line-by-line reader made 1,000 clients the bottleneck)."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
    try:
        async with client.stream("GET", f"{url}/events", headers=headers) as response:
            if response.status_code != 200:
                arrivals.failures.append(f"HTTP {response.status_code}")
                return
            arrivals.connected += 1
            pending = b""
            async for chunk in response.aiter_raw():
                arrivals.bytes += len(chunk)
                pending += chunk
                end = pending.rfind(b"\n") + 1  # scan whole lines only; keep the rest for the next chunk
                for match in ID_LINE.finditer(pending, 0, end):
                    arrivals.add(int(match[1]))
                pending = pending[end:]
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


class BareServer:
    """bench/bare_sse.py in its own process: the fan-out floor."""

    def __init__(self, url: str, payload: int, workdir: Path) -> None:
        self.base_url = f"http://127.0.0.1:{free_port()}"
        self.log = (workdir / "bare.log").open("w")
        self.proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "bare_sse.py"), "--port",
                                      self.base_url.rsplit(":", 1)[1], "--database-url", url, "--payload",
                                      str(payload)], stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until_ready(self, "the bare server", 30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)
        self.log.close()


async def measure(apps: list[Any], tokens: list[str], url: str, request_id: int, clients: int, changes: int,
                  rate: float) -> dict[str, Any]:
    arrivals, baseline = Arrivals(), Arrivals()
    stop = asyncio.Event()
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=0)
    listener_ready, listener_stop = threading.Event(), threading.Event()
    listener = threading.Thread(target=notify_listener, args=(url, baseline, listener_ready, listener_stop))
    listener.start()
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, read=None), limits=limits) as client:
        tasks = [asyncio.create_task(sse_client(client, apps[i % len(apps)].base_url, tokens[i % len(tokens)],
                                                      arrivals, stop))
                 for i in range(clients)]
        deadline = time.monotonic() + 60
        while arrivals.connected + len(arrivals.failures) < clients and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        listener_ready.wait(10)
        await asyncio.sleep(SETTLE_SECONDS)  # let every stream reach its live tail, and the server settle
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
    per_event = arrivals.bytes / max(1, len(latencies))
    return {"clients": clients, "connected": arrivals.connected, "failures": arrivals.failures[:5],
            "bytes_per_event": round(per_event),
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
          f"this client {result['client_cpu_percent']}%; {result['bytes_per_event']} bytes per event and client")
    bare = result.get("bare")
    if bare and bare["app"] and app:
        b = bare["app"]
        print(f"  bare sse-starlette broadcast, same clients and bytes: p50 {b['p50_ms']:7.1f} ms  p95 "
              f"{b['p95_ms']:7.1f} ms  p99 {b['p99_ms']:7.1f} ms ({bare['delivered']}/{bare['expected']} delivered; "
              f"server {', '.join(f'{c}%' for c in bare['server_cpu_percent'].values())} CPU, "
              f"{', '.join(f'{mb} MB' for mb in bare['server_rss_mb'].values())})")
        ratio = app["p99_ms"] / b["p99_ms"]
        result["p99_ratio_to_bare"] = round(ratio, 2)
        print(f"  app p99 / bare p99 = {ratio:.2f} (aim <= 2)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["latency", "fanout"])
    parser.add_argument("--clients", type=int)
    parser.add_argument("--changes", type=int)
    parser.add_argument("--rate", type=float, default=20.0, help="changes per second")
    parser.add_argument("--json", action="store_true", help="also write bench/results/live_feed_<mode>.json")
    parser.add_argument("--all-admins", action="store_true", help="every client an admin: one audience")
    parser.add_argument("--profile", metavar="DIR", help="write a cProfile of each app process's event loop there")
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
        tokens, request_id = prepare(url, clients, all_admins=args.all_admins)
        with tempfile.TemporaryDirectory() as workdir:
            for n in range(processes):
                profile = {"GATEHOUSE_PROFILE": str(Path(args.profile).resolve() / f"live_{args.mode}_{n}.prof")} \
                    if args.profile else None
                apps.append(ServedApp(url, f"bench-live-{n}", Path(workdir), extra=profile))
            result = asyncio.run(measure(apps, tokens, url, request_id, clients, changes, rate))
            for app in apps:
                app.stop()
            apps.clear()
            if args.mode == "fanout":  # the floor: a bare broadcast of as many bytes, to the same clients
                apps.append(BareServer(url, result["bytes_per_event"], Path(workdir)))
                result["bare"] = asyncio.run(measure(apps, tokens, url, request_id, clients, changes, rate))
                apps.pop().stop()
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
