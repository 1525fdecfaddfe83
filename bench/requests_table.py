"""Requests table at scale: does `GET /requests?fragment=1` stay fast over 100k requests?

Seeds a scratch database with --rows access requests (default 100,000) from 2,000 people
over 40 resources, then, in this one process, drives two ASGI apps through
httpx.ASGITransport with a closed loop of --concurrency workers:

  app   Gatehouse (`create_app`, its lifespan run, so DBOS is launched as in production),
        signed in with an API token
  bare  a Starlette app whose one route returns a static HTML string of the same size as
        the app's answer for that target
  sql   the same bare app, which first replays the SQL statements the app ran for that page
        (captured from one request, minus the token lookup) with raw DBAPI in the thread
        pool: the floor that reading the page's data costs; app/sql is the ratio the issue
        aims to keep at 0.4 or more

for each target:

  first page        /requests?fragment=1                          as an admin (sees all)
  deep page         /requests?fragment=1&page=2000                as an admin (offset ~50k)
  sorted+filtered   sort=requester, status=approved, q=deploy     as an admin
  approver page     /requests?fragment=1                          as an approver (visibility OR)

and prints req/s, p50/p95 and the app/bare ratios. `--explain` also prints the plan of
every SQL statement one request of each target runs.

    .venv/bin/python bench/requests_table.py [--rows 100000] [--duration 5] [--concurrency 4] [--explain] [--json]

Databases: SQLite (a file in a temporary directory), and PostgreSQL when BENCH_PG_URL (default
postgresql://postgres@127.0.0.1:5432) is reachable: a scratch database `gatehouse_bench_<hex>`
is created and dropped at the end. `--sqlite-only` skips PostgreSQL.

Reading the figures: client and server share one process and one event loop, so the
bare figures are the cost of the loop, httpx and Starlette for a body of that size; the
ratio is what the table adds: the token lookup, the queries (in the thread pool), the
template, and gzip (the app's middleware compresses; the bare app does not). On SQLite
every session begins IMMEDIATE, so concurrent requests queue on the database: p50 is
about concurrency x the cost of one request. Compare runs made on the same machine only;
the load average printed first says whether something else was running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "bench" / "results" / "requests_table.json"
sys.path.insert(0, str(ROOT))

from webapp.app import create_app  # noqa: E402
from webapp.config import Settings  # noqa: E402
from webapp.core.db import Database  # noqa: E402
from webapp.core.migrate import upgrade  # noqa: E402
from webapp.core.models import AccessRequest, RequestStatus, Resource, ResourceApprover, User, utcnow  # noqa: E402
from webapp.services import identity as auth  # noqa: E402

PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
PEOPLE, APPROVERS, RESOURCES = 2_000, 20, 40
BATCH = 10_000
WARMUP_SECONDS = 1.0
DEEP_PAGE = 2_000
TARGETS: list[tuple[str, str, str]] = [  # (name, path, who)
    ("first page", "/requests?fragment=1", "admin"),
    ("deep page", f"/requests?fragment=1&page={DEEP_PAGE}", "admin"),
    ("sorted+filtered", "/requests?fragment=1&sort=requester&order=asc&status=approved&q=deploy", "admin"),
    ("approver page", "/requests?fragment=1", "approver"),
]
REASONS = [
    "On call this week and need to investigate production alerts.",
    "Quarter-end reconciliation needs read access to the ledger.",
    "Debugging the staging deploy pipeline.",
    "Building the churn dashboard for the leadership review.",
    "Customer escalation: need to check the account configuration.",
    "Onboarding to the platform team.",
]
# Mostly finished requests, a few pending: the shape of a table that has been in use.
STATUS_WEIGHTS = {RequestStatus.approved: 40, RequestStatus.revoked: 25, RequestStatus.rejected: 12,
                  RequestStatus.expired: 10, RequestStatus.canceled: 8, RequestStatus.requested: 4,
                  RequestStatus.failed: 1}
DURATIONS = [3600, 8 * 3600, 7 * 86400, 30 * 86400, None]


# --- data ----------------------------------------------------------------------------------


def seed(url: str, rows: int) -> dict[str, str]:
    """Migrate and fill the database; returns an API token per role that the targets use."""
    upgrade(url)
    database = Database(url)
    rng = random.Random(20261124)
    now = utcnow()
    try:
        with database.session() as session:
            people = [{"email": f"person{i}@example.com", "name": f"{rng.choice('ABCDEFGHKLMNPRST')}{i:05d} Person",
                       "role": "admin" if i == 0 else "approver" if i <= APPROVERS else "member",
                       "department": "", "title": "", "active": True, "created_at": now}
                      for i in range(PEOPLE)]
            session.execute(sa.insert(User), people)
            user_ids = list(session.scalars(sa.select(User.id).order_by(User.id)))
            session.execute(sa.insert(Resource), [
                {"name": f"resource-{i:02d}", "kind": "app", "description": "", "approvals_required": 1,
                 "auto_approve": False, "pending_ttl_seconds": 72 * 3600, "created_at": now} for i in range(RESOURCES)])
            resource_ids = list(session.scalars(sa.select(Resource.id).order_by(Resource.id)))
            session.execute(sa.insert(ResourceApprover), [
                {"resource_id": r, "user_id": user_ids[1 + i % APPROVERS]} for i, r in enumerate(resource_ids)])
            statuses, weights = list(STATUS_WEIGHTS), list(STATUS_WEIGHTS.values())
            for start in range(0, rows, BATCH):
                batch = []
                for n in range(start, min(rows, start + BATCH)):
                    created = now - timedelta(days=365 * (rows - n) / rows, seconds=rng.randint(0, 3600))
                    status = rng.choices(statuses, weights)[0]
                    pending = status == RequestStatus.requested
                    decided = None if pending else created + timedelta(minutes=rng.randint(1, 600))
                    batch.append({
                        "requester_id": rng.choice(user_ids[1:]), "resource_id": rng.choice(resource_ids),
                        "reason": rng.choice(REASONS), "duration_seconds": rng.choice(DURATIONS), "status": status,
                        "workflow_id": f"bench-{n}", "created_at": created, "updated_at": decided or created,
                        # Still pending: not overdue, or the app's sweep would expire it mid-run.
                        "pending_until": (now if pending else created) + timedelta(hours=72), "decided_at": decided,
                    })
                session.execute(sa.insert(AccessRequest), batch)
            tokens = {}
            for role, user_id in (("admin", user_ids[0]), ("approver", user_ids[1])):
                user = session.get(User, user_id)
                issuer = auth.Principal(user_ids[0], "person0@example.com", "admin", "admin")
                _token, tokens[role] = auth.issue_token(session, user=user, name="bench", issued_by=issuer, now=now)  # type: ignore[arg-type]
        if url.startswith("postgresql"):
            with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE"))
        else:
            with database.engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
        return tokens
    finally:
        database.dispose()


@contextmanager
def postgres_database() -> Iterator[str | None]:
    """A scratch PostgreSQL database, or None when no server answers."""
    maintenance = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT",
                                   connect_args={"connect_timeout": 3})
    name = f"gatehouse_bench_{uuid.uuid4().hex[:10]}"
    try:
        with maintenance.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        print(f"PostgreSQL at {PG_SERVER.split('@')[-1]} not reachable, skipped: {type(exc).__name__}")
        maintenance.dispose()
        yield None
        return
    try:
        yield f"{PG_SERVER}/{name}"
    finally:
        with maintenance.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maintenance.dispose()


# --- apps ----------------------------------------------------------------------------------


def bare_app(bodies: dict[str, str], engine: sa.Engine | None = None,
             queries: dict[str, list[tuple[str, Any]]] | None = None) -> Any:
    """The static answer; with `engine` and `queries`, first the page's own SQL statements,
    replayed as they are (raw DBAPI, in the thread pool): the floor a page of data costs."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import HTMLResponse
    from starlette.routing import Route

    def replay(name: str) -> None:
        assert engine is not None and queries is not None
        with engine.connect() as conn:
            for sql, params in queries[name]:
                conn.exec_driver_sql(sql, params).fetchall()

    async def page(request: Any) -> HTMLResponse:
        name = request.path_params["name"]
        if queries is not None:
            await run_in_threadpool(replay, name)
        return HTMLResponse(bodies[name])

    return Starlette(routes=[Route("/{name}", page)])


def page_queries(statements: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """The statements that read the page's data (not the sign-in's token lookup)."""
    return [(sql, params) for sql, params in statements
            if sql.lstrip().upper().startswith("SELECT") and "api_tokens" not in sql and "user_sessions" not in sql]


@asynccontextmanager
async def gatehouse(url: str, workdir: Path) -> AsyncIterator[Any]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        env="development", database_url=url, secret_key=SECRET, executor_id="bench-table", app_version="bench",
        log_level="WARNING", log_format="console", shutdown_grace_seconds=0.5,
        dbos_system_database_url=f"sqlite:///{workdir / 'dbos.sqlite'}" if url.startswith("sqlite") else None,
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


# --- load ----------------------------------------------------------------------------------


@dataclass
class Result:
    requests: int
    errors: int
    rps: float
    p50_ms: float
    p95_ms: float


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), round(q / 100 * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


async def drive(client: httpx.AsyncClient, path: str, headers: dict[str, str], seconds: float,
                concurrency: int) -> Result:
    """Closed loop: `concurrency` workers, one request at a time each, for `seconds` after a warm-up."""
    latencies: list[float] = []
    errors = 0

    async def worker(deadline: float, record: bool) -> None:
        nonlocal errors
        while time.perf_counter() < deadline:
            began = time.perf_counter()
            response = await client.get(path, headers=headers)
            if record:
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - began)
                else:
                    errors += 1

    warm = time.perf_counter() + WARMUP_SECONDS
    await asyncio.gather(*(worker(warm, False) for _ in range(concurrency)))
    start = time.perf_counter()
    await asyncio.gather(*(worker(start + seconds, True) for _ in range(concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return Result(len(latencies), errors, round(len(latencies) / elapsed, 1),
                  round(1000 * percentile(latencies, 50), 2), round(1000 * percentile(latencies, 95), 2))


def explain(engine: sa.Engine, statements: list[tuple[str, Any]]) -> None:
    postgres = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        for sql, params in statements:
            if not sql.lstrip().upper().startswith("SELECT") or "access_requests" not in sql:
                continue
            prefix = "EXPLAIN (ANALYZE, BUFFERS OFF) " if postgres else "EXPLAIN QUERY PLAN "
            rows = conn.exec_driver_sql(prefix + sql, params).all()
            print("    " + " ".join(sql.split())[:160])
            for row in rows:
                print("      " + " | ".join(str(c) for c in row))


async def run_database(label: str, url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    began = time.perf_counter()
    tokens = seed(url, args.rows)
    print(f"\n{label}: seeded {args.rows:,} requests in {time.perf_counter() - began:.1f} s")
    async with gatehouse(url, workdir) as app:
        statements: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
            statements.append((statement, parameters))

        engine = app.state.db.engine
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
            bodies: dict[str, str] = {}
            queries: dict[str, list[tuple[str, Any]]] = {}
            for name, path, who in TARGETS:
                headers = {"Authorization": f"Bearer {tokens[who]}"}
                statements.clear()
                sa.event.listen(engine, "before_cursor_execute", capture)
                probe = await client.get(path, headers=headers)
                sa.event.remove(engine, "before_cursor_execute", capture)
                if probe.status_code != 200 or 'id="request-row-' not in probe.text:
                    raise RuntimeError(f"{name}: HTTP {probe.status_code}, no rows:\n{probe.text[:500]}")
                bodies[name.replace(" ", "-").replace("+", "-")] = probe.text
                queries[name.replace(" ", "-").replace("+", "-")] = page_queries(statements)
                if args.explain:
                    print(f"  {name}: {path}")
                    explain(engine, statements)
            bare_transport = httpx.ASGITransport(app=bare_app(bodies))
            floor_transport = httpx.ASGITransport(app=bare_app(bodies, engine, queries))
            async with httpx.AsyncClient(transport=bare_transport, base_url="http://bench") as bare, \
                    httpx.AsyncClient(transport=floor_transport, base_url="http://bench") as sql_floor:
                print(f"{'target':<18}{'bytes':>8}{'app req/s':>11}{'app p50':>9}{'app p95':>9}"
                      f"{'bare req/s':>12}{'bare p95':>10}{'rps bare/app':>14}{'p95 app/bare':>14}"
                      f"{'sql req/s':>11}{'app/sql':>9}")
                for name, path, who in TARGETS:
                    key = name.replace(" ", "-").replace("+", "-")
                    headers = {"Authorization": f"Bearer {tokens[who]}"}
                    mine = await drive(client, path, headers, args.duration, args.concurrency)
                    floor = await drive(bare, f"/{key}", {}, args.duration, args.concurrency)
                    with_sql = await drive(sql_floor, f"/{key}", {}, args.duration, args.concurrency)
                    ratios = {"rps_bare_over_app": round(floor.rps / max(mine.rps, 0.1), 1),
                              "p95_app_over_bare": round(mine.p95_ms / max(floor.p95_ms, 0.001), 1),
                              "rps_app_over_sql_floor": round(mine.rps / max(with_sql.rps, 0.1), 2)}
                    results[name] = {"path": path, "as": who, "bytes": len(bodies[key]), "app": asdict(mine),
                                     "bare": asdict(floor), "sql_floor": asdict(with_sql), **ratios}
                    print(f"{name:<18}{len(bodies[key]):>8}{mine.rps:>11.0f}{mine.p50_ms:>9.1f}{mine.p95_ms:>9.1f}"
                          f"{floor.rps:>12.0f}{floor.p95_ms:>10.1f}{ratios['rps_bare_over_app']:>14.1f}"
                          f"{ratios['p95_app_over_bare']:>14.1f}{with_sql.rps:>11.0f}"
                          f"{ratios['rps_app_over_sql_floor']:>9.2f}" + (f"  ({mine.errors} errors)" if mine.errors else ""))
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000, help="access requests to seed (default 100000)")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per target (default 5)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent requests (default 4)")
    parser.add_argument("--explain", action="store_true", help="print the plan of each target's SQL")
    parser.add_argument("--sqlite-only", action="store_true", help="skip PostgreSQL")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS_FILE.relative_to(ROOT)}")
    args = parser.parse_args(argv)
    if args.rows < DEEP_PAGE * 25 + 25:
        parser.error(f"--rows must be at least {DEEP_PAGE * 25 + 25} for the deep page to have rows")
    if not 0 < args.duration <= 600 or not 1 <= args.concurrency <= 256:
        parser.error("--duration must be in (0, 600] and --concurrency in [1, 256]")
    return args


async def main_async(args: argparse.Namespace) -> None:
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
          f"concurrency {args.concurrency}, {args.duration:g} s per target after {WARMUP_SECONDS:g} s warm-up")
    report: dict[str, Any] = {"benchmark": "requests_table", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(), "rows": args.rows, "concurrency": args.concurrency,
                              "duration_s": args.duration, "databases": {}}
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-table-") as tmp:
        report["databases"]["sqlite"] = await run_database("SQLite", f"sqlite:///{Path(tmp) / 'app.sqlite'}",
                                                           Path(tmp), args)
    if not args.sqlite_only:
        with postgres_database() as url, tempfile.TemporaryDirectory(prefix="gatehouse-bench-table-") as tmp:
            if url is not None:
                report["databases"]["postgresql"] = await run_database("PostgreSQL", url, Path(tmp), args)
    if args.json:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS_FILE.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> int:
    asyncio.run(main_async(parse_args(argv)))
    sys.stdout.flush()
    os._exit(0)  # DBOS executor threads are not joined (see tests/conftest.py)


if __name__ == "__main__":
    sys.exit(main())
