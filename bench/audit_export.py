"""Audit CSV export at scale: does `GET /audit.csv` stream 200k (or 1M) rows in constant memory?

Seeds audit rows into a scratch database, then for each size (default 20,000 and 200,000;
`--million` adds 1,000,000) starts a fresh `python -m webapp serve` (a real uvicorn process),
signs in with an admin API token and streams the whole export, reading it in 64 KiB pieces
and keeping none of it. Measured on the server process:

  peak growth   VmHWM after the export minus VmRSS just before it. The high-water mark is
                reset first (`5` into /proc/<pid>/clear_refs), after a warm-up export of
                ~4,000 rows (two batches) with the same encoding, so imports, the compiled
                statement cache and the thread pool are not counted
  peak RSS      the server's VmHWM after the export (absolute)
  cpu us/row    the server's user+system CPU for the export, per row

and on the client: rows/s, CSV bytes (decompressed) and wire bytes. The CSV is checked as it
streams: a header, then exactly the table's row count, ids strictly increasing, first and last
id equal to the table's min and max.

Each export runs with `Accept-Encoding: gzip` (what a browser sends: the app's GZipMiddleware
compresses every piece) and with `identity`, one after the other on the same server; `--repeat K`
runs each K times there (a leak would add to the peak every time; a filling allocator levels off).

The baseline, in the same run and for the same rows, is the export done naively: a fresh Python
process runs one `SELECT` of the same columns, all rows into a list (the ORM session, as the app
reads), then builds the whole CSV in memory with the app's own row writer. Its growth over the
process's RSS before the SELECT is what a non-streamed export would hold. The ratios
growth(largest)/growth(smallest) show which one grows with the table: the streamed export
should stay near 1 (flat), the baseline near the row ratio.

    .venv/bin/python bench/audit_export.py                       # SQLite, 20k and 200k
    .venv/bin/python bench/audit_export.py --db postgresql       # a scratch PostgreSQL database
    .venv/bin/python bench/audit_export.py --db both --million   # also 1,000,000 rows
    .venv/bin/python bench/audit_export.py --sizes 5000,50000 --encodings gzip --json

Databases: SQLite is a file in a temporary directory. PostgreSQL is a database
`gatehouse_bench_<hex>` created on BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432)
and dropped at the end. Rows are added to reach each size in turn (SQLAlchemy executemany on
SQLite, COPY on PostgreSQL), so the sizes share one database.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
RESULTS_FILE = ROOT / "bench" / "results" / "audit_export.json"
sys.path.insert(0, str(ROOT))

from served_app import ServedApp, cpu_seconds, status_kb  # noqa: E402

from webapp.core.db import Database, psycopg_url  # noqa: E402
from webapp.core.models import AuditEvent  # noqa: E402

PG_SERVER = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432").rstrip("/")
SECRET = "bench-secret-key-that-is-long-enough-0123456789"
READY_SECONDS = 60.0
SEED_BATCH = 20_000
WARMUP_ROWS = 4_000
READ_CHUNK = 64 * 1024
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)
STEP = timedelta(seconds=20)  # row k is at EPOCH + k * STEP: `until` selects a prefix of ids
ACTIONS = ["request.submitted", "request.approved", "request.rejected", "grant.created", "grant.revoked",
           "auth.signed_in", "notification.sent", "request.expired"]
RESOURCES = ["prod-db", "staging-cluster", "billing-ledger", "analytics-warehouse", "ci-runners",
             "customer-support-console", "vpn", "feature-flags"]
REASONS = ["On call this week and need to investigate production alerts.",
           "Quarter-end reconciliation needs read access to the ledger.",
           "Debugging the staging deploy pipeline.", "Onboarding to the platform team."]


# --- data ----------------------------------------------------------------------------------


def audit_row(k: int) -> dict[str, Any]:
    """The k-th seeded row: about the size of what a request's life writes (~200 CSV bytes)."""
    request_id = k // 4 + 1
    action = ACTIONS[k % len(ACTIONS)]
    details: dict[str, Any] = {"request_id": request_id, "resource": RESOURCES[k % len(RESOURCES)],
                               "status": action.split(".")[1]}
    if action == "request.submitted":
        details["reason"] = REASONS[k % len(REASONS)]
    return {"at": EPOCH + k * STEP, "actor": f"person{k % 5000}@example.com", "actor_id": None,
            "action": action, "subject": f"request:{request_id}", "details": details}


def prepare(url: str) -> str:
    """Migrate, and create an admin with an API token (which writes a few audit rows)."""
    from webapp.core.migrate import upgrade
    from webapp.core.models import utcnow
    from webapp.services.accounts import create_user
    from webapp.services.identity import Principal, issue_token

    upgrade(url)
    database = Database(url)
    try:
        with database.session() as session:
            admin = create_user(session, email="bench@example.test", name="Bench Admin", password=None, role="admin")
            issuer = Principal(admin.id, admin.email, admin.name, admin.role)  # type: ignore[arg-type]
            _, token = issue_token(session, user=admin, name="bench", issued_by=issuer, now=utcnow())
            return token
    finally:
        database.dispose()


def audit_count(database: Database) -> int:
    with database.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(AuditEvent)).scalar_one())


def top_up(url: str, total: int) -> tuple[int, float]:
    """Add seeded rows until the table holds `total`; returns (rows added, seconds)."""
    database = Database(url)
    began = time.perf_counter()
    try:
        have = audit_count(database)
        if have >= total:
            return 0, 0.0
        seeded = range(have, total)
        if url.startswith("postgresql"):
            import psycopg

            columns = ("at", "actor", "actor_id", "action", "subject", "details")
            with psycopg.connect(psycopg_url(url)) as conn, conn.cursor() as cur, \
                    cur.copy(f"COPY audit_events ({', '.join(columns)}) FROM STDIN") as copy:
                for k in seeded:
                    row = audit_row(k)
                    copy.write_row([row["at"], row["actor"], None, row["action"], row["subject"],
                                    json.dumps(row["details"])])
            with database.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE audit_events"))
        else:
            table = AuditEvent.__table__  # type: ignore[attr-defined]
            for start in range(0, len(seeded), SEED_BATCH):
                with database.engine.begin() as conn:
                    conn.execute(sa.insert(table), [audit_row(k) for k in seeded[start:start + SEED_BATCH]])
            with database.engine.connect() as conn:
                conn.execute(sa.text("ANALYZE"))
                conn.commit()
                # Readers then find the rows in the database file, not in a large WAL.
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        if audit_count(database) != total:
            raise RuntimeError(f"seeding left {audit_count(database)} audit rows, not {total}")
        return total - have, time.perf_counter() - began
    finally:
        database.dispose()


def id_range(url: str) -> tuple[int, int]:
    database = Database(url)
    try:
        with database.engine.connect() as conn:
            low, high = conn.execute(sa.select(sa.func.min(AuditEvent.id), sa.func.max(AuditEvent.id))).one()
            return int(low), int(high)
    finally:
        database.dispose()


@contextmanager
def postgres_database() -> Iterator[str]:
    maintenance = sa.create_engine(f"{PG_SERVER}/postgres", isolation_level="AUTOCOMMIT",
                                   connect_args={"connect_timeout": 3})
    name = f"gatehouse_bench_{uuid.uuid4().hex[:10]}"
    with maintenance.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER.replace('postgresql://', 'postgresql+psycopg://', 1)}/{name}"
    finally:
        with maintenance.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maintenance.dispose()


# --- memory --------------------------------------------------------------------------------


def reset_peak(pid: int | str) -> bool:
    """Set VmHWM back to the current RSS (Linux >= 4.0); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# --- baseline (runs in its own process) ----------------------------------------------------


def baseline_child(url: str) -> None:
    """One SELECT of every row into a list, then the whole CSV in memory; prints JSON."""
    from webapp.services.logs import AUDIT_COLUMNS
    from webapp.web.admin.logs import _csv_lines

    database = Database(url)
    columns = [getattr(AuditEvent, name) for name in AUDIT_COLUMNS]
    statement = sa.select(*columns).order_by(AuditEvent.id)
    with database.session() as session:  # warm-up: connect, compile, a few rows through the writer
        "".join(_csv_lines(iter(session.execute(statement.limit(WARMUP_ROWS)).all())))
    rss = status_kb("self", "VmRSS")
    exact = reset_peak("self")
    began = time.perf_counter()
    with database.session() as session:
        rows = session.execute(statement).all()
    fetched = time.perf_counter()
    list_peak = status_kb("self", "VmHWM")
    body = "".join(_csv_lines(iter(rows))).encode()
    done = time.perf_counter()
    csv_peak = status_kb("self", "VmHWM")
    print(json.dumps({"rows": len(rows), "csv_bytes": len(body), "rss_before_mb": rss / 1024,
                      "list_growth_mb": (list_peak - rss) / 1024, "csv_growth_mb": (csv_peak - rss) / 1024,
                      "peak_mb": csv_peak / 1024, "select_s": fetched - began, "total_s": done - began,
                      "exact_peak": exact}))
    sys.stdout.flush()
    database.dispose()


def run_baseline(url: str) -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--baseline-child", url],
                         capture_output=True, text=True, cwd=ROOT, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"baseline failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- the app -------------------------------------------------------------------------------


def stream_export(client: httpx.Client, path: str, token: str, encoding: str) -> dict[str, Any]:
    """GET `path`, read in pieces, keep nothing; count and check the CSV lines as they pass."""
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": encoding}
    wire = size = lines = 0
    header: bytes | None = None
    first_id = last_id = 0
    ordered = True
    tail = b""
    inflate = zlib.decompressobj(wbits=31) if encoding == "gzip" else None
    began = time.perf_counter()
    with client.stream("GET", path, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{path}: HTTP {response.status_code}: {response.read()[:300]!r}")
        content_encoding = response.headers.get("content-encoding", "identity")
        if (content_encoding == "gzip") != (inflate is not None):
            raise RuntimeError(f"asked for {encoding}, got Content-Encoding {content_encoding}")
        for piece in response.iter_raw(READ_CHUNK):
            wire += len(piece)
            data = inflate.decompress(piece) if inflate else piece
            size += len(data)
            parts = (tail + data).split(b"\n")
            tail = parts.pop()
            for line in parts:
                if header is None:
                    header = line
                    continue
                line_id = int(line[:line.index(b",")])
                if line_id <= last_id:
                    ordered = False
                first_id = first_id or line_id
                last_id = line_id
                lines += 1
    elapsed = time.perf_counter() - began
    if inflate is not None:
        tail += inflate.flush()
    if tail.strip():
        raise RuntimeError(f"the CSV does not end with a newline: {tail[-200:]!r}")
    return {"encoding": content_encoding, "seconds": elapsed, "rows": lines, "csv_bytes": size, "wire_bytes": wire,
            "header": (header or b"").decode().strip(), "first_id": first_id, "last_id": last_id,
            "ordered": ordered}


def measure_export(server: ServedApp, token: str, encoding: str, warmup_until: str,
                   expect: tuple[int, int, int]) -> dict[str, Any]:
    rows_expected, low, high = expect
    with httpx.Client(base_url=server.base_url, timeout=120) as client:
        warm = stream_export(client, f"/audit.csv?until={warmup_until}", token, encoding)
        if warm["rows"] < WARMUP_ROWS - 10:
            raise RuntimeError(f"the warm-up export had {warm['rows']} rows")
        time.sleep(0.2)
        rss = status_kb(server.pid, "VmRSS")
        exact = reset_peak(server.pid)
        hwm_before = status_kb(server.pid, "VmHWM")
        cpu = cpu_seconds(server.pid)
        result = stream_export(client, "/audit.csv", token, encoding)
        cpu = cpu_seconds(server.pid) - cpu
        peak = status_kb(server.pid, "VmHWM")
        after = status_kb(server.pid, "VmRSS")
    problems = []
    if result["rows"] != rows_expected:
        problems.append(f"{result['rows']} rows, expected {rows_expected}")
    if result["header"] != "id,at,actor,actor_id,action,subject,details":
        problems.append(f"header {result['header']!r}")
    if (result["first_id"], result["last_id"]) != (low, high) or not result["ordered"]:
        problems.append(f"ids {result['first_id']}..{result['last_id']} (ordered={result['ordered']}), "
                        f"expected {low}..{high}")
    if problems:
        raise RuntimeError("export check failed: " + "; ".join(problems))
    return {**result, "rss_before_mb": rss / 1024, "peak_mb": peak / 1024, "rss_after_mb": after / 1024,
            "growth_mb": (peak - (rss if exact else hwm_before)) / 1024, "exact_peak": exact,
            "server_cpu_s": cpu, "rows_per_s": result["rows"] / result["seconds"],
            "cpu_us_per_row": 1e6 * cpu / max(1, result["rows"])}


# --- report --------------------------------------------------------------------------------


def run_database(label: str, url: str, workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    token = prepare(url)
    print(f"\n{label}")
    print(f"{'rows':>9} {'encoding':<9}{'csv MB':>8}{'wire MB':>8}{'s':>7}{'rows/s':>9}{'srv us/row':>11}"
          f"{'srv idle MB':>12}{'srv peak MB':>12}{'growth MB':>10}  |{'base s':>7}{'list MB':>9}{'list+csv MB':>12}")
    sizes: dict[str, Any] = {}
    for n in args.sizes:
        added, seconds = top_up(url, n)
        low, high = id_range(url)
        warmup_until = (EPOCH + WARMUP_ROWS * STEP).strftime("%Y-%m-%dT%H:%M:%S")
        base = run_baseline(url) if not args.no_baseline else None
        server = ServedApp(url, f"bench-{label.lower()}-{n}", workdir, secret_key=SECRET)
        exports: dict[str, Any] = {}
        try:
            for enc in args.encodings:
                for run in range(1, args.repeat + 1):
                    key = enc if run == 1 else f"{enc}#{run}"
                    exports[key] = measure_export(server, token, enc, warmup_until, (n, low, high))
        finally:
            server.stop()
        if base is not None and base["rows"] != n:
            raise RuntimeError(f"the baseline read {base['rows']} rows, expected {n}")
        sizes[str(n)] = {"seeded_rows": added, "seed_s": round(seconds, 1), "exports": exports, "baseline": base}
        for i, (enc, r) in enumerate(exports.items()):
            tail = (f"  |{base['total_s']:>7.1f}{base['list_growth_mb']:>9.1f}{base['csv_growth_mb']:>12.1f}"
                    if base and i == 0 else "  |")
            print(f"{n:>9,} {enc:<9}{r['csv_bytes'] / 1e6:>8.1f}{r['wire_bytes'] / 1e6:>8.1f}{r['seconds']:>7.1f}"
                  f"{r['rows_per_s']:>9,.0f}{r['cpu_us_per_row']:>11.1f}{r['rss_before_mb']:>12.1f}"
                  f"{r['peak_mb']:>12.1f}{r['growth_mb']:>10.1f}{tail}")
        sys.stdout.flush()
    small, large = str(args.sizes[0]), str(args.sizes[-1])
    rows_ratio = args.sizes[-1] / args.sizes[0]
    ratios: dict[str, Any] = {"rows": rows_ratio}
    growth: list[str] = []

    def per_row(mb: float) -> str:
        return f"{mb * 2**20 / args.sizes[-1]:,.0f} B/row"

    for enc in args.encodings:
        a, b = sizes[small]["exports"][enc], sizes[large]["exports"][enc]
        ratios[f"stream_{enc}_peak_rss"] = b["peak_mb"] / a["peak_mb"]
        ratios[f"stream_{enc}_growth"] = b["growth_mb"] / max(a["growth_mb"], 1.0)
        growth.append(f"stream {enc} {a['growth_mb']:.1f} -> {b['growth_mb']:.1f} ({per_row(b['growth_mb'])})")
    if not args.no_baseline:
        a, b = sizes[small]["baseline"], sizes[large]["baseline"]
        ratios["baseline_peak_rss"] = b["peak_mb"] / a["peak_mb"]
        ratios["baseline_growth"] = b["csv_growth_mb"] / max(a["csv_growth_mb"], 1.0)
        growth.append(f"baseline {a['csv_growth_mb']:.1f} -> {b['csv_growth_mb']:.1f} ({per_row(b['csv_growth_mb'])})")
    print(f"{args.sizes[-1]:,}/{args.sizes[0]:,} rows = {rows_ratio:g}x. Peak RSS largest/smallest: "
          + ", ".join(f"{k.removesuffix('_peak_rss').replace('_', ' ')} {v:.2f}" for k, v in ratios.items()
                      if k.endswith("_peak_rss"))
          + ". Growth ratio (denominator at least 1 MB): "
          + ", ".join(f"{k.removesuffix('_growth').replace('_', ' ')} {v:.1f}" for k, v in ratios.items()
                      if k.endswith("_growth")))
    print("Growth MB smallest -> largest: " + "; ".join(growth))
    return {"sizes": sizes, "ratios": ratios}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--sizes", default="20000,200000", help="row counts, ascending (default 20000,200000)")
    parser.add_argument("--million", action="store_true", help="also 1,000,000 rows")
    parser.add_argument("--encodings", default="gzip,identity", help="Accept-Encoding of each export run")
    parser.add_argument("--repeat", type=int, default=1,
                        help="exports per encoding on the same server (shows whether growth levels off)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the in-memory baseline")
    parser.add_argument("--json", action="store_true", help=f"also write {RESULTS_FILE.relative_to(ROOT)}")
    parser.add_argument("--baseline-child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_child:
        return args
    args.sizes = sorted({int(s) for s in args.sizes.split(",")} | ({1_000_000} if args.million else set()))
    args.encodings = [e.strip() for e in args.encodings.split(",") if e.strip()]
    if args.sizes[0] < WARMUP_ROWS + 100 or not set(args.encodings) <= {"gzip", "identity"} or args.repeat < 1:
        parser.error(f"sizes must be at least {WARMUP_ROWS + 100}; encodings gzip and/or identity; --repeat >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.baseline_child:
        baseline_child(args.baseline_child)
        return 0
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
          f"GET /audit.csv through `webapp serve` (uvicorn), read in {READ_CHUNK // 1024} KiB pieces; "
          f"growth = server VmHWM during the export - VmRSS before it; baseline = one SELECT into a list + "
          f"the whole CSV in memory, in a fresh process")
    report: dict[str, Any] = {"benchmark": "audit_export", "when": datetime.now(UTC).isoformat(timespec="seconds"),
                              "cpus": os.cpu_count(), "sizes": args.sizes, "databases": {}}
    if args.db in ("sqlite", "both"):
        with tempfile.TemporaryDirectory(prefix="gatehouse-bench-export-") as tmp:
            report["databases"]["sqlite"] = run_database("SQLite", f"sqlite:///{Path(tmp) / 'app.sqlite'}",
                                                         Path(tmp), args)
    if args.db in ("postgresql", "both"):
        with postgres_database() as url, tempfile.TemporaryDirectory(prefix="gatehouse-bench-export-") as tmp:
            report["databases"]["postgresql"] = run_database("PostgreSQL", url, Path(tmp), args)
    if args.json:
        RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
        RESULTS_FILE.write_text(json.dumps(report, indent=2) + "\n")
        print(f"\nwrote {RESULTS_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
