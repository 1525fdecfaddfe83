"""Request throughput: end-to-end access requests per second, against a bare DBOS floor.

One run does three measurements on PostgreSQL, one after another, each in its own process
on its own scratch database (random names, dropped at the end):

  app     Gatehouse (`python -m webapp serve`) on a migrated database holding --concurrency
          requesters, two approvers, three resources per requester (one approver each) and
          an API token per person. --concurrency requester loops (closed loop, one
          keep-alive connection per person) each repeat:
              POST /requests (duration permanent)     -> 201 {"id", "workflow_id"}
              POST /requests/{id}/approve (approver)  -> 200 {"status": "approved"}
              wait until Slack and email both delivered the approver's request.submitted
              and the requester's request.approved to the local receivers
          The receivers (a webhook and an SMTP server, on the load generator's event loop)
          match deliveries by their dedup key. A request counts when its last delivery
          arrives inside the measured window.
  shaped  a bare DBOS app with the same durable structure as one request (below), driven
          the same way by --concurrency threads inside that process: start the parent
          workflow under an id and wait for its "recorded" event, send it the decision and
          wait for the decision's event, wait until its four "send" steps ran. Every
          transaction is a one-row INSERT (or UPDATE) through the same datasource wrapper
          and engine settings as the app; the steps do no I/O.
  flat    what the issue asks for literally: one workflow with as many steps as one request
          has (13 datasource transactions, each a one-row write, and 6 plain steps), started
          by --concurrency threads in a closed loop.

One request's durable work, counted from webapp/workflows/access.py and notify.py (the
approved path, one approver, channels slack + email + outbox):

  access_request_workflow                            1 workflow
    record_request, apply_decision, create_grant     3 transactions
    notify.active_channels (twice)                   2 steps
    set_event recorded, set_event message:<id>       2 events; 1 recv; 6 enqueues
  2 messages x {slack, email} deliver workflows      4 workflows
    record_notification, mark_sent                   8 transactions
    notify.<channel>.send (SMTP / webhook POST)      4 steps
  2 messages x outbox deliver workflow               2 workflows
    record_notification (status sent)                2 transactions
  in all: 7 workflows, 13 transactions, 6 steps, 2 events, 1 message, 6 queued starts;
  HTTP side: 2 requests, 1 start_workflow, 1 send, 2 get_event waits.

Queues get the same settings in the app and in the shaped baseline: worker concurrency
--slack-concurrency / --email-concurrency (the app's defaults are 1 and 5) and outbox 10,
polling every --queue-polling seconds. The rate limiters of the slack and email queues are
raised to 1,000,000 per second (the defaults, 1/s and 50/30 s, would make the limiter the
only thing measured); the submission rate limit too.

Each target warms up for --warmup seconds and at least until --concurrency requests (or
workflows) completed, up to 30 s (a closed loop reaches its steady state once every loop
went round once); then --duration seconds are measured. Only what completes inside the
window counts. When the app answers a submission with 503 (not recorded within its 10 s),
the loop resends the same form, as a user would (the form key makes it the same request);
an approval answered with 503 was sent, so the loop waits for the deliveries. Both count
as errors, and the request counts when its deliveries arrive.

Costs are compared two ways: throughput (cost = 1 / throughput) and CPU seconds per
request: the server process (from /proc), plus PostgreSQL (the backends serving its
database, the shared background processes, and the backends of any database that exited
meanwhile, through the postmaster's reaped-children time). The load generator and the
receivers run only in the app's phase and share the cores, so CPU per request is the
fairer ratio; both are printed. Also printed: the server process's kernel share, threads and context switches per
request; pg_stat_database counters per request; serialization failures per request and the
statements that failed, from the server log (BENCH_PG_LOG, or the Debian default path) when
it is readable. --profile samples the app with py-spy (not a project dependency: `pip
install py-spy` into the venv) and prints where its threads spend their time.

    .venv/bin/python bench/request_throughput.py [--duration 15] [--concurrency 50] [--json]
    .venv/bin/python bench/request_throughput.py --profile [cpu|gil]

BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432) names the server; the scratch
databases are created through its `postgres` maintenance database and dropped in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from contextlib import AsyncExitStack, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parent.parent)]
from http_baseline import (  # noqa: E402  (the bench directory is not a package)
    LOOPBACK,
    ROOT,
    Server,
    child_env,
    client_loop_name,
    free_port,
    git_commit,
    percentile,
    run_loop,
    stop_server,
    wait_ready,
)

from webapp.core.db import Database  # noqa: E402
from webapp.workflows.datasource import AppDatasource  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_FILE = BENCH_DIR / "results" / "request_throughput.json"
PROFILE_FILE = BENCH_DIR / "results" / "request_throughput.app.folded"
PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
WARMUP_SECONDS = 3.0
MAX_WARMUP_SECONDS = 30.0  # the warm-up also lasts until --concurrency requests completed
HTTP_TIMEOUT_SECONDS = 30.0
DELIVERY_TIMEOUT_SECONDS = 30.0
DRAIN_SECONDS = 5.0  # after the window, in-flight requests get this long, then are abandoned
RESOURCES_PER_REQUESTER = 3  # a request stuck pending (an error) must not block its requester
HIGH_RATE = 1_000_000
OUTBOX_CONCURRENCY = 10  # the app's default
REASON = "Benchmark: end-to-end request throughput."
CHANNELS_WAITED = ("slack", "email")  # the outbox is checked in the database at the end
FLAT_TRANSACTIONS, FLAT_STEPS = 13, 6


# --- scratch databases ---------------------------------------------------------------------


def database_url(name: str) -> str:
    return f"{PG_SERVER}/{name}"


def _maintenance_engine() -> sa.Engine:
    return sa.create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")


def create_database(name: str) -> None:
    engine = _maintenance_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    finally:
        engine.dispose()


def drop_database(name: str) -> None:
    engine = _maintenance_engine()
    try:
        with engine.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        engine.dispose()


# --- CPU accounting (Linux /proc) ----------------------------------------------------------


def _proc_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on: [1] ppid, [11] utime, [12] stime,
    [13] cutime, [14] cstime (waited-for children), in clock ticks."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def proc_cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    fields = _proc_fields(pid)
    if fields is None:
        return None
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def process_detail(pid: int) -> dict[str, float] | None:
    """System CPU seconds, thread count and context switches (summed over threads) of a process."""
    fields = _proc_fields(pid)
    if fields is None:
        return None
    switches = 0
    with suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.endswith("ctxt_switches:") or "ctxt_switches:" in line:
                        switches += int(line.split()[1])
    return {"sys": int(fields[12]) / os.sysconf("SC_CLK_TCK"), "threads": int(fields[17]), "switches": switches}


def machine_busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies over all cores since boot."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


class PgCpu:
    """CPU time of the PostgreSQL processes serving one database, plus the shared background
    processes (WAL writer, checkpointer, ...) and every backend that exited meanwhile (the
    postmaster's reaped-children time), so connection churn is counted too. Backends are
    found through pg_stat_activity, so the server must be local; None when /proc cannot be
    read. Also counts the sessions (connections) opened on the database."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        self.engine = sa.create_engine(database_url(dbname), poolclass=sa.pool.NullPool)
        self.start: dict[int, float] = {}
        self.postmaster: int | None = None
        self.postmaster0: float | None = None
        self.stats0: dict[str, int] = {}

    COUNTERS = ("sessions", "xact_commit", "xact_rollback", "tup_inserted", "tup_updated", "tup_deleted",
                "tup_fetched", "deadlocks")

    def _snapshot(self) -> tuple[set[int], dict[str, int]]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT pid FROM pg_stat_activity WHERE (datname = :db OR datname IS NULL) AND pid <> pg_backend_pid()"
            ), {"db": self.dbname})
            pids = {int(row[0]) for row in rows}
            stats = conn.execute(sa.text(
                f"SELECT {', '.join(self.COUNTERS)} FROM pg_stat_database WHERE datname = :db"), {"db": self.dbname}
            ).mappings().first()
        return pids, {k: int(v) for k, v in (stats or {}).items() if v is not None}

    def _read(self, pids: set[int]) -> dict[int, float]:
        return {pid: cpu for pid in pids if (cpu := proc_cpu_seconds(pid)) is not None}

    def begin(self) -> None:
        pids, self.stats0 = self._snapshot()
        self.start = self._read(pids)
        for pid in self.start:
            fields = _proc_fields(pid)
            if fields is not None:
                self.postmaster = int(fields[1])
                break
        if self.postmaster is not None:
            self.postmaster0 = proc_cpu_seconds(self.postmaster, children=True)

    def end(self) -> tuple[float | None, dict[str, int]]:
        """CPU seconds since begin(), and the pg_stat_database counters' increments (the
        server publishes them within about a second, so short windows are approximate)."""
        pids, stats = self._snapshot()
        now = self._read(pids | set(self.start))
        counted = {k: v - self.stats0[k] for k, v in stats.items() if k in self.stats0}
        if not now and not self.start:
            return None, counted
        live = sum(cpu - self.start.get(pid, 0.0) for pid, cpu in now.items())
        reaped = 0.0
        if self.postmaster is not None and self.postmaster0 is not None:
            reaped = (proc_cpu_seconds(self.postmaster, children=True) or self.postmaster0) - self.postmaster0
        return live + reaped, counted

    def dispose(self) -> None:
        self.engine.dispose()


class PgLog:
    """Serialization failures of one database, counted in the PostgreSQL server log between
    begin() and end() (the datasource transactions are SERIALIZABLE; DBOS retries them). The
    log is BENCH_PG_LOG, or the Debian default; None when it cannot be read."""

    def __init__(self, dbname: str) -> None:
        self.dbname = dbname
        candidates = [os.environ.get("BENCH_PG_LOG", "")] + sorted(
            str(p) for p in Path("/var/log/postgresql").glob("postgresql-*-main.log"))
        self.path = next((Path(c) for c in candidates if c and os.access(c, os.R_OK)), None)
        self.offset = 0

    def begin(self) -> None:
        if self.path is not None:
            with suppress(OSError):
                self.offset = self.path.stat().st_size

    def end(self) -> tuple[int | None, list[tuple[str, int]]]:
        """(failures, the statements that failed, most frequent first)."""
        if self.path is None:
            return None, []
        try:
            with self.path.open("rb") as log:
                log.seek(self.offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return None, []
        marker = f"@{self.dbname} "
        failing: dict[str, int] = {}  # pid -> failures not yet matched with a STATEMENT line
        statements: Counter[str] = Counter()
        failures = 0
        for line in text.splitlines():
            if marker not in line:
                continue
            pid = line.partition("[")[2].partition("]")[0]
            if "ERROR:  could not serialize access" in line:
                failures += 1
                failing[pid] = failing.get(pid, 0) + 1
            elif "STATEMENT:" in line and failing.get(pid):
                failing[pid] -= 1
                statements[" ".join(line.partition("STATEMENT:")[2].split())[:70]] += 1
        return failures, statements.most_common(6)


@dataclass
class CpuWindow:
    """Start/stop snapshots of the server process, PostgreSQL, this process and the machine."""

    server_pid: int
    pg: PgCpu
    log: PgLog | None = None
    began: float = 0.0
    server0: float | None = None
    detail0: dict[str, float] | None = None
    client0: float = 0.0
    machine0: tuple[int, int] | None = None

    def begin(self) -> None:
        if self.log is not None:
            self.log.begin()
        self.pg.begin()
        self.server0 = proc_cpu_seconds(self.server_pid)
        self.detail0 = process_detail(self.server_pid)
        self.client0 = time.process_time()
        self.machine0 = machine_busy_jiffies()
        self.began = time.perf_counter()

    def end(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.began
        server1 = proc_cpu_seconds(self.server_pid)
        detail1 = process_detail(self.server_pid)
        client1 = time.process_time()
        machine1 = machine_busy_jiffies()
        pg, stats = self.pg.end()
        failures, statements = self.log.end() if self.log is not None else (None, [])
        machine = None
        if self.machine0 and machine1 and machine1[1] > self.machine0[1]:
            machine = (machine1[0] - self.machine0[0]) / (machine1[1] - self.machine0[1])
        return {
            "elapsed": elapsed,
            "server_cpu": None if server1 is None or self.server0 is None else server1 - self.server0,
            "server_sys_cpu": None if not detail1 or not self.detail0 else detail1["sys"] - self.detail0["sys"],
            "server_switches": (
                None if not detail1 or not self.detail0 else detail1["switches"] - self.detail0["switches"]),
            "server_threads": None if not detail1 else detail1["threads"],
            "pg_cpu": pg,
            "client_cpu": client1 - self.client0,
            "machine_busy": machine,
            "pg_stats": stats,
            "serialization_failures": failures,
            "serialization_failure_statements": statements,
        }


# --- results -------------------------------------------------------------------------------


@dataclass
class Sample:
    began: float
    submitted: float  # the first answer (201 / the "recorded" event)
    approved: float  # the decision's answer (200 / the decision's event)
    delivered: float  # the last awaited delivery


@dataclass
class Result:
    target: str
    concurrency: int
    duration_s: float
    completed: int
    errors: int
    per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float
    submit_p50_ms: float
    approve_p50_ms: float
    deliver_p50_ms: float
    server_cpu_pct: float | None
    server_cpu_ms_per: float | None
    server_sys_share_pct: float | None  # kernel time, of the server process's CPU time
    server_threads: int | None
    server_switches_per: float | None  # context switches per request, all threads
    pg_cpu_pct: float | None
    pg_cpu_ms_per: float | None
    total_cpu_ms_per: float | None
    client_cpu_pct: float | None
    machine_busy_pct: float | None
    pg_connections_opened: int | None
    pg_per_request: dict[str, float]
    serialization_failures: int | None
    serialization_failure_statements: list[tuple[str, int]]
    error_samples: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def summarise(
    target: str, concurrency: int, samples: list[Sample], errors: Counter[str], window: tuple[float, float],
    cpu: dict[str, Any], extra: dict[str, Any] | None = None,
) -> Result:
    start, end = window
    done = [s for s in samples if start <= s.delivered <= end]
    elapsed = end - start
    n = len(done)
    total = sorted(s.delivered - s.began for s in done)
    submit = sorted(s.submitted - s.began for s in done)
    approve = sorted(s.approved - s.submitted for s in done)
    deliver = sorted(s.delivered - s.approved for s in done)

    def ms(values: list[float], q: float) -> float:
        return round(1000 * percentile(values, q), 1)

    def pct(seconds: float | None) -> float | None:
        return None if seconds is None else round(100 * seconds / elapsed, 1)

    def per(seconds: float | None) -> float | None:
        return None if seconds is None or not n else round(1000 * seconds / n, 2)

    server, pg = cpu.get("server_cpu"), cpu.get("pg_cpu")
    stats: dict[str, int] = cpu.get("pg_stats") or {}
    both = None if server is None or pg is None else server + pg
    busy = cpu.get("machine_busy")
    return Result(
        target=target,
        concurrency=concurrency,
        duration_s=round(elapsed, 3),
        completed=n,
        errors=sum(errors.values()),
        per_s=round(n / elapsed, 2) if elapsed > 0 else 0.0,
        p50_ms=ms(total, 50),
        p95_ms=ms(total, 95),
        p99_ms=ms(total, 99),
        max_ms=round(1000 * total[-1], 1) if total else 0.0,
        submit_p50_ms=ms(submit, 50),
        approve_p50_ms=ms(approve, 50),
        deliver_p50_ms=ms(deliver, 50),
        server_cpu_pct=pct(server),
        server_cpu_ms_per=per(server),
        server_sys_share_pct=None if not server or cpu.get("server_sys_cpu") is None else round(
            100 * cpu["server_sys_cpu"] / server, 1),
        server_threads=cpu.get("server_threads"),
        server_switches_per=None if cpu.get("server_switches") is None or not n else round(cpu["server_switches"] / n),
        pg_cpu_pct=pct(pg),
        pg_cpu_ms_per=per(pg),
        total_cpu_ms_per=per(both),
        client_cpu_pct=pct(cpu.get("client_cpu")),
        machine_busy_pct=None if busy is None else round(100 * busy, 1),
        pg_connections_opened=stats.get("sessions"),
        pg_per_request={k: round(v / n, 1) for k, v in stats.items() if k != "sessions"} if n else {},
        serialization_failures=cpu.get("serialization_failures"),
        serialization_failure_statements=cpu.get("serialization_failure_statements") or [],
        error_samples=[f"{count} x {what}" for what, count in errors.most_common(5)],
        extra=extra or {},
    )


# --- the app's database --------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: int
    email: str
    token: str


@dataclass(frozen=True)
class Slot:
    """One requester loop: the requester and, per resource, its approver."""

    requester: Person
    resources: list[tuple[int, Person]]


def prepare_app_database(url: str, concurrency: int) -> list[Slot]:
    from webapp.core.migrate import upgrade
    from webapp.core.models import Resource, ResourceApprover, Role, utcnow
    from webapp.services.accounts import create_user
    from webapp.services.identity import Principal, issue_token

    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            admin = create_user(session, email="bench-admin@bench.example", name="Bench Admin", password=None,
                                role=Role.admin)
            issuer = Principal(admin.id, admin.email, admin.name, admin.role)  # type: ignore[arg-type]

            def person(email: str, name: str, role: str) -> Person:
                user = create_user(session, email=email, name=name, password=None, role=role)
                _row, secret = issue_token(session, user=user, name="bench", issued_by=issuer, now=utcnow())
                return Person(user.id, user.email, secret)  # type: ignore[arg-type]

            approvers = [person(f"approver{i}@bench.example", f"Approver {i}", Role.approver) for i in (1, 2)]
            slots = []
            for i in range(concurrency):
                requester = person(f"requester{i:04d}@bench.example", f"Requester {i}", Role.member)
                resources = []
                for j in range(RESOURCES_PER_REQUESTER):
                    approver = approvers[(i + j) % len(approvers)]
                    resource = Resource(name=f"bench-{i:04d}-{j}", description="benchmark resource",
                                        max_duration_seconds=None, approvals_required=1)
                    session.add(resource)
                    session.flush()
                    session.add(ResourceApprover(resource_id=resource.id,  # type: ignore[arg-type]
                                                 user_id=approver.id))
                    resources.append((resource.id, approver))
                slots.append(Slot(requester, resources))  # type: ignore[arg-type]
            return slots
    finally:
        database.dispose()


def check_app_database(url: str, completed_ids: set[int]) -> dict[str, Any]:
    """After the run: notification rows by channel and status, the outbox rows of the
    completed requests, and workflows that ended in an error."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            by_status = {
                f"{channel}/{status}": count
                for channel, status, count in conn.execute(sa.text(
                    "SELECT channel, status, count(*) FROM notifications GROUP BY channel, status ORDER BY 1, 2"))
            }
            outbox_sent = {
                (int(request_id), event) for request_id, event in conn.execute(sa.text(
                    "SELECT request_id, split_part(dedup_key, ':', 3) FROM notifications "
                    "WHERE channel = 'outbox' AND status = 'sent'"))
            }
            missing_outbox = sum(
                1 for rid in completed_ids for event in ("request.submitted", "request.approved")
                if (rid, event) not in outbox_sent
            )
            # Ids the audit table handed out but never committed (rolled-back inserts, e.g.
            # serialization failures); the live feed's tailer waits on each such hole.
            audit_holes = conn.execute(sa.text(
                "SELECT coalesce(max(id) - min(id) + 1 - count(*), 0) FROM audit_events")).scalar()
            workflows = {
                status: count for status, count in conn.execute(sa.text(
                    "SELECT status, count(*) FROM dbos.workflow_status GROUP BY status ORDER BY 1"))
            }
    finally:
        engine.dispose()
    return {"notifications": by_status, "completed_without_outbox_rows": missing_outbox,
            "audit_id_holes": int(audit_holes or 0), "workflows": workflows}


# --- receivers -----------------------------------------------------------------------------


class Deliveries:
    """Deliveries seen by the receivers, by dedup key `<channel>:<request>:<event>:<recipient>`,
    and the requesters waiting for theirs. Lives on the load generator's event loop."""

    def __init__(self) -> None:
        self.count: Counter[str] = Counter()
        self.by_request: dict[int, set[str]] = defaultdict(set)
        self.waiters: dict[int, tuple[frozenset[str], asyncio.Future[None]]] = {}
        self.stamps: list[float] = []
        self.unparsed = 0

    def record(self, key: str | None) -> None:
        self.stamps.append(time.perf_counter())
        parts = (key or "").split(":", 3)
        if len(parts) != 4 or not parts[1].isdigit():
            self.unparsed += 1
            return
        self.count[key] += 1  # type: ignore[index]
        request_id = int(parts[1])
        self.by_request[request_id].add(key)  # type: ignore[arg-type]
        waiter = self.waiters.get(request_id)
        if waiter and waiter[0] <= self.by_request[request_id] and not waiter[1].done():
            waiter[1].set_result(None)

    async def wait(self, request_id: int, keys: frozenset[str], timeout: float) -> bool:
        if keys <= self.by_request[request_id]:
            self.by_request.pop(request_id, None)
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[request_id] = (keys, future)
        try:
            await asyncio.wait_for(future, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self.waiters.pop(request_id, None)
            self.by_request.pop(request_id, None)

    @property
    def duplicates(self) -> int:
        return sum(count - 1 for count in self.count.values() if count > 1)


DEDUP_LINE = re.compile(rb"^X-Gatehouse-Dedup-Key:[ \t]*(\S+)[ \t]*\r?$", re.MULTILINE | re.IGNORECASE)


class SmtpHandler:
    def __init__(self, deliveries: Deliveries) -> None:
        self.deliveries = deliveries

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content = envelope.original_content or envelope.content
        match = DEDUP_LINE.search(content if isinstance(content, bytes) else content.encode())
        self.deliveries.record(match.group(1).decode() if match else None)
        return "250 OK"


async def start_receivers(deliveries: Deliveries) -> tuple[list[asyncio.AbstractServer], str, int]:
    """A webhook endpoint (minimal HTTP/1.1) and an SMTP server (aiosmtpd), both on the
    running loop. Returns the servers, the webhook URL and the SMTP port."""
    from aiosmtpd.smtp import SMTP

    async def webhook(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length, close = 0, False
                for line in head.split(b"\r\n")[1:]:
                    name, _, value = line.partition(b":")
                    name = name.strip().lower()
                    if name == b"content-length":
                        length = int(value)
                    elif name == b"connection" and value.strip().lower() == b"close":
                        close = True
                body = await reader.readexactly(length)
                try:
                    key = json.loads(body).get("dedup_key")
                except ValueError:
                    key = None
                deliveries.record(key)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    http_server = await asyncio.start_server(webhook, LOOPBACK, 0)
    handler = SmtpHandler(deliveries)
    smtp_server = await loop.create_server(
        lambda: SMTP(handler, hostname="bench-receiver", ident="bench-receiver"), LOOPBACK, 0
    )
    http_port = http_server.sockets[0].getsockname()[1]
    smtp_port = smtp_server.sockets[0].getsockname()[1]
    return [http_server, smtp_server], f"http://{LOOPBACK}:{http_port}/hooks/slack", smtp_port


# --- the app run ---------------------------------------------------------------------------


def start_app(workdir: Path, env: dict[str, str], port: int) -> Server:
    log_path = workdir / "app.log"
    command = [sys.executable, "-m", "webapp", "serve", "--host", LOOPBACK, "--port", str(port)]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, env=env, cwd=workdir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    return Server("app", process, port, log_path)


def app_env(args: argparse.Namespace, url: str, port: int, webhook_url: str, smtp_port: int) -> dict[str, str]:
    return child_env(
        ENV="development",
        DATABASE_URL=url,
        EXECUTOR_ID=f"bench-{secrets.token_hex(3)}",
        APP_VERSION="bench",
        SECRET_KEY=secrets.token_urlsafe(48),
        LOG_LEVEL="WARNING",
        BASE_URL=f"http://{LOOPBACK}:{port}",
        SLACK_WEBHOOK_URL=webhook_url,
        SMTP_HOST=LOOPBACK,
        SMTP_PORT=str(smtp_port),
        SMTP_STARTTLS="false",
        SUBMIT_RATE_LIMIT=str(HIGH_RATE),
        SLACK_RATE_LIMIT=str(HIGH_RATE),
        SLACK_RATE_PERIOD="1",
        EMAIL_RATE_LIMIT=str(HIGH_RATE),
        EMAIL_RATE_PERIOD="1",
        SLACK_CONCURRENCY=str(args.slack_concurrency),
        EMAIL_CONCURRENCY=str(args.email_concurrency),
        OUTBOX_CONCURRENCY=str(OUTBOX_CONCURRENCY),
        QUEUE_POLLING_INTERVAL=str(args.queue_polling),
        NOTIFY_QUEUE_POLLING_INTERVAL=str(args.queue_polling),
        SHUTDOWN_GRACE_SECONDS="3",  # requests abandoned after the window leave workflows waiting
    )


def start_profiler(pid: int, seconds: float, output: Path, mode: str) -> subprocess.Popen[bytes] | None:
    py_spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if py_spy is None:
        print("profile: py-spy not found (pip install py-spy into the venv); not profiling")
        return None
    command = [py_spy, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", "100",
               "--format", "raw", "--output", str(output), "--nonblocking", "--full-filenames"]
    if mode == "gil":
        command.append("--gil")
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


async def run_app(
    args: argparse.Namespace, workdir: Path, url: str, dbname: str, slots: list[Slot]
) -> tuple[Result, set[int]]:
    deliveries = Deliveries()
    servers, webhook_url, smtp_port = await start_receivers(deliveries)
    port = free_port()
    app = start_app(workdir, app_env(args, url, port, webhook_url, smtp_port), port)
    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    completed_ids: set[int] = set()
    stop = asyncio.Event()
    pg = PgCpu(dbname)
    profiler = None
    try:
        await asyncio.to_thread(wait_ready, app, "/readyz")
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        timeout = httpx.Timeout(HTTP_TIMEOUT_SECONDS)

        async def requester(slot: Slot, stack: AsyncExitStack) -> None:
            def client(token: str) -> httpx.AsyncClient:
                return httpx.AsyncClient(base_url=app.base_url, limits=limits, timeout=timeout, headers={
                    "Authorization": f"Bearer {token}", "Accept": "application/json"})

            mine = await stack.enter_async_context(client(slot.requester.token))
            theirs = {p.id: await stack.enter_async_context(client(p.token)) for _, p in slot.resources}
            n = 0
            while not stop.is_set():
                resource_id, approver = slot.resources[n % len(slot.resources)]
                n += 1
                began = time.perf_counter()
                form = {"resource_id": str(resource_id), "duration": "permanent", "reason": REASON,
                        "form_key": f"bench-{uuid.uuid4().hex}"}
                try:
                    response = await mine.post("/requests", data=form)
                    while response.status_code == 503 and time.perf_counter() - began < DELIVERY_TIMEOUT_SECONDS:
                        # Not recorded within the app's 10 s: send the same form again, as a
                        # user would; the form key makes the app answer with the one request.
                        errors["submit HTTP 503 (not recorded in 10 s; resent with the same form key)"] += 1
                        await asyncio.sleep(0.5)
                        response = await mine.post("/requests", data=form)
                    if response.status_code != 201:
                        errors[f"submit HTTP {response.status_code}: {response.text[:120]}"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    request_id = int(response.json()["id"])
                    submitted = time.perf_counter()
                    response = await theirs[approver.id].post(f"/requests/{request_id}/approve", data={"comment": ""})
                    if response.status_code == 503:
                        # The decision was sent but not applied within 10 s: the deliveries
                        # below still say when it was.
                        errors["approve HTTP 503 (sent, not applied in 10 s; waited for the deliveries)"] += 1
                    elif response.status_code != 200 or response.json().get("status") != "approved":
                        errors[f"approve HTTP {response.status_code}: {response.text[:120]}"] += 1
                        await asyncio.sleep(0.2)
                        continue
                    approved = time.perf_counter()
                except httpx.HTTPError as exc:
                    errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                    await asyncio.sleep(0.2)
                    continue
                keys = frozenset(
                    key for channel in CHANNELS_WAITED for key in (
                        f"{channel}:{request_id}:request.submitted:{approver.email}",
                        f"{channel}:{request_id}:request.approved:{slot.requester.email}")
                )
                if not await deliveries.wait(request_id, keys, DELIVERY_TIMEOUT_SECONDS):
                    errors["deliveries not all received within 30 s"] += 1
                    continue
                samples.append(Sample(began, submitted, approved, time.perf_counter()))
                completed_ids.add(request_id)

        async with AsyncExitStack() as stack:
            tasks = [asyncio.create_task(requester(slot, stack)) for slot in slots]
            warm_until = time.perf_counter() + MAX_WARMUP_SECONDS
            await asyncio.sleep(args.warmup)
            while len(samples) < args.concurrency and time.perf_counter() < warm_until:
                await asyncio.sleep(0.1)  # steady state: every loop went round once
            window = CpuWindow(app.process.pid, pg, PgLog(dbname))
            await asyncio.to_thread(window.begin)
            start, errors_before = time.perf_counter(), Counter(errors)
            if args.profile:
                profiler = start_profiler(app.process.pid, args.duration, workdir / "app.folded", args.profile)
            await asyncio.sleep(args.duration)
            end, window_errors = time.perf_counter(), errors - errors_before
            cpu = await asyncio.to_thread(window.end)
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=DRAIN_SECONDS)
            for task in pending:
                task.cancel()
            for task in done:
                if task.exception() is not None:
                    window_errors[f"requester loop crashed: {task.exception()!r}"[:160]] += 1
        received = sum(1 for t in deliveries.stamps if start <= t <= end)
        extra = {
            "deliveries_received_in_window": received,
            "duplicate_deliveries": deliveries.duplicates,
            "unparsed_deliveries": deliveries.unparsed,
        }
        if profiler is not None:
            _out, err = profiler.communicate(timeout=60)
            extra["profile"] = (str(workdir / "app.folded") if profiler.returncode == 0
                                else f"py-spy failed: {err.decode()[-300:]}")
        result = summarise("app", args.concurrency, samples, window_errors, (start, end), cpu, extra)
        return result, completed_ids
    finally:
        pg.dispose()
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
            profiler.wait()
        stop_server(app)
        for server in servers:
            server.close()
            with suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 2)


# --- the baselines (run in a subprocess: `--baseline-worker flat|shaped`) ------------------
#
# Registered at import in every process that imports this file; only the worker launches
# DBOS. The datasource wrapper is the app's (webapp.workflows.datasource.AppDatasource), bound to an engine
# built like the app's (webapp.core.db.create_db_engine), so a transaction costs what it costs
# in the app minus what the app does inside it.

BASE_DS = AppDatasource()
_SIGNALS: dict[str, Any] = {}
_SIGNALS_LOCK = threading.Lock()


class Waiter:
    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.seen: set[str] = set()
        self.event = threading.Event()

    def hit(self, key: str) -> None:
        with _SIGNALS_LOCK:
            self.seen.add(key)
            if len(self.seen) >= self.expected:
                self.event.set()


@BASE_DS.transaction()
def base_insert(workflow_id: str, kind: str) -> int:
    return int(BASE_DS.session().execute(
        sa.text("INSERT INTO bench_rows (workflow_id, kind) VALUES (:w, :k) RETURNING id"),
        {"w": workflow_id, "k": kind},
    ).scalar_one())


@BASE_DS.transaction()
def base_mark(row_id: int) -> None:
    BASE_DS.session().execute(sa.text("UPDATE bench_rows SET kind = 'sent' WHERE id = :id"), {"id": row_id})


@DBOS.step()
def base_plain_step(n: int) -> int:
    return n + 1


def base_active_channels() -> list[str]:
    return ["slack", "email", "outbox"]


@DBOS.step()
def base_send(parent_id: str, key: str) -> None:
    with _SIGNALS_LOCK:
        waiter = _SIGNALS.get(parent_id)
    if waiter is not None:
        waiter.hit(key)


@DBOS.workflow()
def base_deliver(parent_id: str, key: str) -> str:
    row_id = base_insert(key, "queued")
    base_send(parent_id, key)
    base_mark(row_id)
    return "sent"


@DBOS.workflow()
def base_deliver_outbox(key: str) -> str:
    base_insert(key, "sent")
    return "sent"


def _base_notify(parent_id: str, event: str) -> None:
    names = DBOS.run_step({"name": "base.active_channels"}, base_active_channels)
    for name in names:
        key = f"{name}:{parent_id}:{event}"
        with SetWorkflowID(f"notify:{key}"):
            if name == "outbox":
                DBOS.enqueue_workflow(name, base_deliver_outbox, key)
            else:
                DBOS.enqueue_workflow(name, base_deliver, parent_id, key)


@DBOS.workflow()
def base_request(parent_id: str) -> str:
    request_row = base_insert(parent_id, "request")
    DBOS.set_event("recorded", {"request_id": request_row})
    _base_notify(parent_id, "request.submitted")
    message = DBOS.recv("decision", timeout_seconds=120)
    if message is None:
        return "expired"
    base_insert(parent_id, "decision")
    DBOS.set_event(f"message:{message['id']}", {"applied": True, "status": "approved"})
    base_insert(parent_id, "grant")
    _base_notify(parent_id, "request.approved")
    return "approved"


@DBOS.workflow()
def base_flat(tag: str) -> int:
    total = 0
    for i in range(max(FLAT_TRANSACTIONS, FLAT_STEPS)):
        if i < FLAT_TRANSACTIONS:
            total += base_insert(tag, "flat") > 0
        if i < FLAT_STEPS:
            total += base_plain_step(i) > 0
    return total


def baseline_worker(args: argparse.Namespace) -> int:
    """The body of a baseline subprocess: prints one `RESULT {json}` line."""
    url = args.database_url
    dbname = url.rsplit("/", 1)[1]
    database = Database(url)
    with database.engine.begin() as conn:
        conn.execute(sa.text(
            "CREATE TABLE IF NOT EXISTS bench_rows (id bigserial PRIMARY KEY, workflow_id text NOT NULL, "
            "kind text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())"))
    DBOS(config={
        "name": "gatehouse-bench-baseline",
        "system_database_url": url,
        "executor_id": "bench-baseline",
        "application_version": "bench",
        "log_level": "WARNING",
        "enable_otlp": False,
    })
    BASE_DS.bind(database)
    DBOS.launch()
    for name, concurrency, limited in (("slack", args.slack_concurrency, True),
                                       ("email", args.email_concurrency, True),
                                       ("outbox", OUTBOX_CONCURRENCY, False)):
        DBOS.register_queue(name, worker_concurrency=concurrency,
                            limiter={"limit": HIGH_RATE, "period": 1.0} if limited else None,
                            polling_interval_sec=args.queue_polling, on_conflict="always_update")

    samples: list[Sample] = []
    errors: Counter[str] = Counter()
    lock = threading.Lock()
    stop = threading.Event()

    def one_shaped() -> Sample | None:
        parent_id = f"base-{uuid.uuid4().hex}"
        waiter = Waiter(2 * len(CHANNELS_WAITED))
        with _SIGNALS_LOCK:
            _SIGNALS[parent_id] = waiter
        try:
            began = time.perf_counter()
            with SetWorkflowID(parent_id):
                DBOS.start_workflow(base_request, parent_id)
            if DBOS.get_event(parent_id, "recorded", timeout_seconds=HTTP_TIMEOUT_SECONDS) is None:
                raise RuntimeError("no recorded event")
            submitted = time.perf_counter()
            message_id = uuid.uuid4().hex
            DBOS.send(parent_id, {"id": message_id, "kind": "approve"}, "decision", idempotency_key=message_id)
            if DBOS.get_event(parent_id, f"message:{message_id}", timeout_seconds=HTTP_TIMEOUT_SECONDS) is None:
                raise RuntimeError("no decision event")
            approved = time.perf_counter()
            if not waiter.event.wait(DELIVERY_TIMEOUT_SECONDS):
                raise RuntimeError("send steps not all run within 30 s")
            return Sample(began, submitted, approved, time.perf_counter())
        finally:
            with _SIGNALS_LOCK:
                _SIGNALS.pop(parent_id, None)

    def one_flat() -> Sample | None:
        began = time.perf_counter()
        DBOS.start_workflow(base_flat, "flat").get_result()
        now = time.perf_counter()
        return Sample(began, now, now, now)

    one = one_shaped if args.baseline_worker == "shaped" else one_flat

    def driver() -> None:
        while not stop.is_set():
            try:
                sample = one()
            except Exception as exc:  # noqa: BLE001 - counted and shown
                with lock:
                    errors[f"{type(exc).__name__}: {exc}"[:160]] += 1
                time.sleep(0.2)
                continue
            with lock:
                samples.append(sample)  # type: ignore[arg-type]

    threads = [threading.Thread(target=driver, name=f"driver-{i}", daemon=True) for i in range(args.concurrency)]
    pg = PgCpu(dbname)
    try:
        for thread in threads:
            thread.start()
        warm_until = time.perf_counter() + MAX_WARMUP_SECONDS
        time.sleep(args.warmup)
        while len(samples) < args.concurrency and time.perf_counter() < warm_until:
            time.sleep(0.1)
        window = CpuWindow(os.getpid(), pg, PgLog(dbname))
        window.begin()
        with lock:
            start, errors_before = time.perf_counter(), Counter(errors)
        time.sleep(args.duration)
        with lock:
            end, window_errors = time.perf_counter(), errors - errors_before
        cpu = window.end()
        cpu["client_cpu"] = None  # the drivers are in the measured process
        stop.set()  # the drivers are daemon threads, abandoned with the process
        with lock:
            done = list(samples)
        result = summarise(args.baseline_worker, args.concurrency, done, window_errors, (start, end), cpu)
    finally:
        pg.dispose()
    print("RESULT " + json.dumps(asdict(result)), flush=True)
    sys.stdout.flush()
    # Skip DBOS's shutdown wait: the database is dropped right after.
    os._exit(0)


def run_baseline(shape: str, args: argparse.Namespace, workdir: Path, url: str) -> Result:
    log_path = workdir / f"baseline-{shape}.log"
    command = [
        sys.executable, str(Path(__file__).resolve()), "--baseline-worker", shape, "--database-url", url,
        "--concurrency", str(args.concurrency), "--duration", str(args.duration), "--warmup", str(args.warmup),
        "--queue-polling", str(args.queue_polling), "--slack-concurrency", str(args.slack_concurrency),
        "--email-concurrency", str(args.email_concurrency),
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=child_env(), cwd=workdir, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=log)
        try:
            out, _ = process.communicate(timeout=MAX_WARMUP_SECONDS + args.duration + 60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("RESULT "):
            return Result(**json.loads(line.removeprefix("RESULT ")))
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
    raise RuntimeError(f"baseline {shape} exited with {process.returncode} and no result:\n{tail}")


# --- profile summary -----------------------------------------------------------------------


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")
PACKAGE_GROUPS = (
    ("/webapp/", "webapp (app code)"),
    ("/dbos/", "dbos"),
    ("sqlalchemy/", "sqlalchemy"),
    ("sqlmodel/", "sqlalchemy"),
    ("psycopg", "psycopg"),
    ("smtplib", "smtplib / email"),
    ("email/", "smtplib / email"),
    ("httpx/", "httpx / httpcore"),
    ("httpcore/", "httpx / httpcore"),
    ("starlette/", "starlette / uvicorn / anyio"),
    ("uvicorn/", "starlette / uvicorn / anyio"),
    ("anyio/", "starlette / uvicorn / anyio"),
    ("pydantic", "pydantic"),
    ("jinja2/", "jinja2"),
    ("json/", "json"),
    ("logging/", "logging"),
    ("concurrent/", "threads / asyncio / locks"),
    ("threading.py", "threads / asyncio / locks"),
    ("asyncio/", "threads / asyncio / locks"),
    ("queue.py", "threads / asyncio / locks"),
    ("socket.py", "sockets / ssl"),
    ("ssl.py", "sockets / ssl"),
)


def _group(path: str) -> str:
    for needle, group in PACKAGE_GROUPS:
        if needle in path:
            return group
    return "other (stdlib, ...)"


# Leaves where a sampled thread waits rather than computes. py-spy's own idle detection
# misses waits inside C code (psycopg's wait_c, uvloop's epoll), so they are dropped here.
WAITING_LEAVES = (
    ("Connection.wait", "psycopg/connection.py"),
    ("Condition.wait", "threading.py"),
    ("Event.wait", "threading.py"),
    ("Thread.join", "threading.py"),
    ("_worker", "concurrent/futures/thread.py"),
    ("Runner.run", "asyncio/runners.py"),
    ("run_notifier", "dbos/_sys_db_postgres.py"),
    ("SocketIO.readinto", "socket.py"),
    ("select", "selectors.py"),
    ("poll", "selectors.py"),
)


def _waiting(func: str, path: str) -> bool:
    return any(func == name and path.endswith(suffix) for name, suffix in WAITING_LEAVES)


def summarise_profile(folded: Path, top: int = 20) -> dict[str, Any]:
    """Self time by package, and inclusive time of the app's own functions, from py-spy's
    raw (folded) output: `frame;frame;... count` per line, frames `func (file:line)`.
    Stacks whose leaf is a wait are counted apart and left out of the shares."""
    total = waiting = 0
    by_group: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [m for f in stack.split(";") if (m := FRAME.match(f))]
        if not frames:
            continue
        if _waiting(frames[-1]["func"], frames[-1]["file"]):
            waiting += count
            continue
        total += count
        by_group[_group(frames[-1]["file"])] += count
        seen = set()
        for match in frames:
            if "/webapp/" in match["file"]:
                name = f"{match['file'].rsplit('/webapp/', 1)[1]}:{match['func']}"
            elif match["func"] in ("create_default_context", "SSLContext.load_verify_locations"):
                name = f"(stdlib) ssl.{match['func']}"
            else:
                continue
            if name not in seen:
                seen.add(name)
                inclusive[name] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {"samples": total, "waiting_samples": waiting, "self_by_package_pct": share(by_group),
            "webapp_inclusive_pct": share(inclusive)}


# --- report --------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 2) if numerator is not None and denominator else None


def ratios(results: dict[str, Result]) -> dict[str, float | None]:
    app = results["app"]
    out: dict[str, float | None] = {}
    for base in ("shaped", "flat"):
        if base not in results:
            continue
        b = results[base]
        out[f"app_over_{base}_cost_by_throughput"] = ratio(b.per_s, app.per_s)
        out[f"app_over_{base}_total_cpu_per_request"] = ratio(app.total_cpu_ms_per, b.total_cpu_ms_per)
        out[f"app_over_{base}_process_cpu_per_request"] = ratio(app.server_cpu_ms_per, b.server_cpu_ms_per)
        out[f"app_over_{base}_pg_cpu_per_request"] = ratio(app.pg_cpu_ms_per, b.pg_cpu_ms_per)
    return out


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "n/a" if value is None else f"{value:{spec}}{suffix}"


def print_table(results: dict[str, Result]) -> None:
    header = (f"{'target':<8}{'done':>7}{'per s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'errors':>7}"
              f"{'srv cpu':>9}{'pg cpu':>8}{'srv ms/req':>11}{'pg ms/req':>10}{'cpu ms/req':>11}{'cli cpu':>8}"
              f"{'busy':>6}{'new conns':>10}")
    print(header)
    print("-" * len(header))
    for r in results.values():
        print(
            f"{r.target:<8}{r.completed:>7}{r.per_s:>8.1f}{r.p50_ms:>9.0f}{r.p95_ms:>9.0f}{r.p99_ms:>9.0f}{r.errors:>7}"
            f"{_fmt(r.server_cpu_pct, '.0f', '%'):>9}{_fmt(r.pg_cpu_pct, '.0f', '%'):>8}"
            f"{_fmt(r.server_cpu_ms_per, '.1f'):>11}{_fmt(r.pg_cpu_ms_per, '.1f'):>10}"
            f"{_fmt(r.total_cpu_ms_per, '.1f'):>11}"
            f"{_fmt(r.client_cpu_pct, '.0f', '%'):>8}{_fmt(r.machine_busy_pct, '.0f', '%'):>6}"
            f"{_fmt(r.pg_connections_opened, 'd'):>10}"
        )
        for sample in r.error_samples:
            print(f"    error: {sample}")
    print()
    print("phases, p50 ms     submit (201 / recorded)   approve (200 / decision event)   deliveries after approve")
    for r in results.values():
        if r.target != "flat":
            print(f"  {r.target:<17}{r.submit_p50_ms:>24.0f}{r.approve_p50_ms:>33.0f}{r.deliver_p50_ms:>27.0f}")
    print()
    print("server process: kernel share of its CPU, threads at the end, context switches per request")
    for r in results.values():
        print(f"  {r.target:<8}sys {_fmt(r.server_sys_share_pct, '.0f', '%')}  threads {_fmt(r.server_threads, 'd')}  "
              f"switches/req {_fmt(r.server_switches_per, '.0f')}")
    print()
    print("database work per request (pg_stat_database; serialization failures from the server log)")
    for r in results.values():
        failures = "n/a" if r.serialization_failures is None or not r.completed else (
            f"{r.serialization_failures / r.completed:.1f}")
        print(f"  {r.target:<8}" + "  ".join(f"{k.removeprefix('xact_').removeprefix('tup_')} {v:g}"
                                           for k, v in r.pg_per_request.items())
              + f"  serialization-failures {failures}")
        for statement, count in r.serialization_failure_statements:
            print(f"           {count:>6} x {statement}")
    print()
    for name, value in ratios(results).items():
        print(f"{name:<44}{_fmt(value, '.2f')}")


def print_profile(summary: dict[str, Any], mode: str, completed: int) -> None:
    """Shares of the samples, and what they come to per completed request (one sample of
    one thread at 100 Hz stands for 10 ms of that thread's time)."""
    kind = "of the thread holding the GIL" if mode == "gil" else "of busy threads"
    print(f"\napp profile (py-spy at 100 Hz, {summary['samples']} samples {kind}; "
          f"{summary['waiting_samples']} samples waiting on I/O or locks left out)")
    per_request = 10 * summary["samples"] / completed if completed else 0.0

    def show(rows: list[tuple[str, float]]) -> None:
        for name, share in rows:
            print(f"    {share:5.1f}%  {share * per_request / 100:6.1f} ms/req  {name}")

    print("  self time by package:")
    show(summary["self_by_package_pct"])
    print("  inclusive time of webapp functions:")
    show(summary["webapp_inclusive_pct"])


# --- main ----------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds per target (default 15)")
    parser.add_argument("--warmup", type=float, default=WARMUP_SECONDS,
                        help=f"least seconds before measuring (default {WARMUP_SECONDS:g})")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent requesters (default 50)")
    parser.add_argument("--slack-concurrency", type=int, default=10,
                        help="slack queue worker concurrency (default 10; the app's default is 1)")
    parser.add_argument("--email-concurrency", type=int, default=10,
                        help="email queue worker concurrency (default 10; the app's default is 5)")
    parser.add_argument("--queue-polling", type=float, default=0.05, help="queue polling interval, s (default 0.05)")
    parser.add_argument("--baselines", default="shaped,flat", help="which baselines to run (default shaped,flat)")
    parser.add_argument(
        "--profile", nargs="?", const="cpu", choices=["cpu", "gil"],
        help="sample the app with py-spy during its window: cpu (busy threads, waits left out; the default) "
             "or gil (only the thread holding the GIL)")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS_FILE.relative_to(ROOT)}")
    parser.add_argument("--baseline-worker", choices=["shaped", "flat"], help=argparse.SUPPRESS)
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 600:
        parser.error("--duration must be in (0, 600]")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be in [0, 60]")
    if not 1 <= args.concurrency <= 500:
        parser.error("--concurrency must be in [1, 500]")
    if args.slack_concurrency < 1 or args.email_concurrency < 1:
        parser.error("queue concurrency must be positive")
    if not 0.01 <= args.queue_polling <= 5:
        parser.error("--queue-polling must be in [0.01, 5]")
    args.baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    if any(b not in ("shaped", "flat") for b in args.baselines):
        parser.error("--baselines takes shaped, flat or both")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_worker:
        return baseline_worker(args)

    suffix = secrets.token_hex(4)
    app_db, base_dbs = f"gatehouse_bench_{suffix}", {b: f"gatehouse_bench_{suffix}_{b}" for b in args.baselines}
    created: list[str] = []
    results: dict[str, Result] = {}
    checks: dict[str, Any] = {}
    profile: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="gatehouse-bench-") as tmp:
        workdir = Path(tmp)
        try:
            for name in (app_db, *base_dbs.values()):
                create_database(name)
                created.append(name)
            print(f"server: {PG_SERVER.split('@')[-1]}, scratch databases {app_db}, {', '.join(base_dbs.values())}")
            began = time.monotonic()
            slots = prepare_app_database(database_url(app_db), args.concurrency)
            print(f"app database migrated; {len(slots)} requesters, 2 approvers, "
                  f"{len(slots) * RESOURCES_PER_REQUESTER} resources ({time.monotonic() - began:.1f} s)")
            print(f"concurrency {args.concurrency}; warm-up {args.warmup:g} s and until {args.concurrency} done, "
                  f"then {args.duration:g} s measured per target; "
                  f"client loop {client_loop_name()}")
            print(f"queues: slack {args.slack_concurrency}, email {args.email_concurrency}, "
                  f"outbox {OUTBOX_CONCURRENCY} workers, polling {args.queue_polling:g} s")
            print(f"rate limits (submissions, slack, email) raised to {HIGH_RATE:,}/s for the bench: the app's "
                  f"defaults (1/s for slack, 50/30 s for email) would make the limiter the only thing measured\n")

            app_result, completed_ids = run_loop(run_app(args, workdir, database_url(app_db), app_db, slots))
            results["app"] = app_result
            checks = check_app_database(database_url(app_db), completed_ids)
            if args.profile and app_result.extra.get("profile", "").endswith(".folded"):
                folded = Path(app_result.extra["profile"])
                profile = summarise_profile(folded)
                PROFILE_FILE.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(folded, PROFILE_FILE)
                app_result.extra["profile"] = str(PROFILE_FILE.relative_to(ROOT))
            for shape, name in base_dbs.items():
                results[shape] = run_baseline(shape, args, workdir, database_url(name))
        except BaseException:
            for log in sorted(workdir.glob("*.log")):
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
                if tail.strip():
                    print(f"--- {log.name} (last lines) ---\n{tail}", file=sys.stderr)
            raise
        finally:
            for name in created:
                try:
                    drop_database(name)
                except Exception as exc:  # noqa: BLE001 - keep dropping the others
                    print(f"could not drop {name}: {exc}", file=sys.stderr)

    print_table(results)
    app_extra = results["app"].extra
    print(f"\napp checks: deliveries received in window {app_extra['deliveries_received_in_window']}, "
          f"duplicates {app_extra['duplicate_deliveries']}, unparsed {app_extra['unparsed_deliveries']}; "
          f"completed requests without both outbox rows {checks.get('completed_without_outbox_rows')}")
    print(f"  notifications {checks.get('notifications')}; audit ids never committed "
          f"{checks.get('audit_id_holes')}")
    print(f"  workflows {checks.get('workflows')}")
    if profile:
        print_profile(profile, args.profile, results["app"].completed)
        print(f"  folded stacks: {app_extra['profile']}")

    if args.json:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        report = {
            "benchmark": "request_throughput",
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "commit": git_commit(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "database": "postgresql",
            "settings": {
                "duration_s": args.duration,
                "warmup_s": args.warmup,
                "concurrency": args.concurrency,
                "slack_concurrency": args.slack_concurrency,
                "email_concurrency": args.email_concurrency,
                "outbox_concurrency": OUTBOX_CONCURRENCY,
                "queue_polling_s": args.queue_polling,
                "rate_limits_per_s": HIGH_RATE,
                "client_loop": client_loop_name(),
            },
            "results": {name: asdict(result) for name, result in results.items()},
            "ratios": ratios(results),
            "checks": checks,
            "profile": profile,
        }
        RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
