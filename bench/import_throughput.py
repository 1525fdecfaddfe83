"""Import throughput: people per second through the durable import, against plain inserts.

One run, on a scratch PostgreSQL database (random name, dropped at the end):

  api       the loopback randomuser-compatible server (tests/support/randomuser_server.py) in its
            own process, serving people from samples/people-5000.json (repeated with new
            uuids past 5,000)
  durable   for each size (default 5,000 and 50,000) and chunk size: the whole import as
            `webapp import-users` runs it, in this process: the parent workflow fetches
            the pages (cold cache: a new seed per run), enqueues one child workflow per
            chunk on the `import` queue, each validating its records and upserting them in
            one transaction; timed from the start of the workflow to the job's last
            commit (finished_at - started_at, read from the job row)
  plain     the same rows, read back from the table, deleted, and inserted again with a
            plain batched INSERT (SQLAlchemy executemany, --plain-batch rows per
            transaction) into the same table: the floor, raw writes with nothing durable

ratio = durable people/s / plain people/s: the share of raw write speed a crash-safe,
resumable, validated import keeps (the issue aims at 0.3 or more, and 5,000 people in
under 5 s).

    .venv/bin/python bench/import_throughput.py                        # 5,000 and 50,000
    .venv/bin/python bench/import_throughput.py --sizes 5000 --chunk-sizes 100,250,500,1000,2000
    .venv/bin/python bench/import_throughput.py --json                 # also bench/results/import_throughput.json

BENCH_PG_URL (default postgresql://postgres@127.0.0.1:5432) names the server.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from webapp.config import Settings  # noqa: E402
from webapp.core.db import Database  # noqa: E402
from webapp.core.migrate import upgrade  # noqa: E402
from webapp.core.models import ImportedPerson, ImportJob  # noqa: E402

PG_URL = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432")


def database_url(name: str) -> str:
    return f"{PG_URL.rstrip('/')}/{name}"


def _maintenance() -> sa.Engine:
    return sa.create_engine(database_url("postgres"), isolation_level="AUTOCOMMIT")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_api() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "support" / "randomuser_server.py"), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    proc.stdout.readline()  # "serving ..." once it listens
    return proc, f"http://127.0.0.1:{port}"


def durable_import(settings: Settings, database: Database, api: str, count: int, chunk_size: int) -> dict[str, Any]:
    from webapp.cli import imports as cli

    seed = f"bench-{uuid.uuid4().hex[:8]}"  # a cold page cache and new people each run
    cpu = time.process_time()
    began = time.perf_counter()
    job_id = cli.begin(settings, database, source=api, count=count, seed=seed, chunk_size=chunk_size, nat="",
                       create_users=False, resume=None, out=open(os.devnull, "w"))
    from dbos import DBOS

    with database.session() as session:
        workflow_id = session.get_one(ImportJob, job_id).workflow_id
    DBOS.retrieve_workflow(workflow_id).get_result(polling_interval_sec=0.25)  # the job row times it
    wall = time.perf_counter() - began
    with database.session() as session:
        job = session.get_one(ImportJob, job_id)
    cpu = time.process_time() - cpu
    assert job.status == "finished", job.status
    assert job.imported == count, (job.imported, count)
    assert job.finished_at is not None
    return {"count": count, "chunk_size": chunk_size, "page_size": job.page_size, "chunks": job.chunks_total,
            "seconds": (job.finished_at - job.started_at).total_seconds(), "wall_seconds": wall, "cpu_seconds": cpu}


def _span_exporter() -> Any:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from webapp.services.people_import import tracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install_test_provider(provider)
    return exporter


PLAIN_CPU: list[float] = []


def plain_insert(database: Database, batch: int) -> float:
    """Read the imported rows, delete them, insert them again in batches; returns seconds."""
    table = ImportedPerson.__table__  # type: ignore[attr-defined]
    with database.session() as session:
        rows = [dict(row._mapping) for row in session.execute(sa.select(table))]
    for row in rows:
        row.pop("id")
        row["import_job_id"] = None
    empty_table(database)
    began, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(rows), batch):
        with database.engine.begin() as conn:
            conn.execute(sa.insert(table), rows[start:start + batch])
    seconds = time.perf_counter() - began
    PLAIN_CPU.append(time.process_time() - cpu)
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(table)) == len(rows)
    empty_table(database)
    return seconds


def empty_table(database: Database) -> None:
    """TRUNCATE, so the durable run and the plain one both start from an empty, clean table."""
    with database.engine.begin() as conn:
        conn.execute(sa.text("TRUNCATE imported_people"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="5000,50000")
    parser.add_argument("--chunk-sizes", default="", help="default: IMPORT_CHUNK_SIZE's default")
    parser.add_argument("--plain-batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=None, help="import queue worker concurrency")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size and chunk size; the median counts")
    parser.add_argument("--spans", action="store_true", help="also print where the time went (import spans)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    default_chunk = Settings.model_fields["import_chunk_size"].default
    chunk_sizes = [int(s) for s in args.chunk_sizes.split(",") if s] or [default_chunk]

    name = f"gatehouse_bench_{uuid.uuid4().hex[:8]}"
    maintenance = _maintenance()
    with maintenance.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    api_proc, api = start_api()
    results: list[dict[str, Any]] = []
    try:
        url = database_url(name)
        upgrade(url)
        with tempfile.TemporaryDirectory() as cache_dir:
            overrides: dict[str, Any] = {
                "database_url": url, "executor_id": "bench", "app_version": "bench", "log_level": "WARNING",
                "import_cache_dir": Path(cache_dir), "queue_polling_interval": 0.05, "background_queue_polling_interval": 0.05,
                "import_rate_limit": 1_000_000, "import_allowed_hosts": "127.0.0.1",
            }
            if args.concurrency:
                overrides["import_concurrency"] = args.concurrency
            settings = Settings(_env_file=None, **overrides)  # type: ignore[call-arg]
            from webapp import workflows
            from webapp.cli import imports as cli
            from webapp.core.logging_setup import configure_logging

            configure_logging("WARNING", "console")
            settings = cli.cli_settings(settings)
            database = Database(url)
            cli.start_workflows(settings, database)
            try:
                durable_import(settings, database, api, min(sizes), chunk_sizes[0])  # warm-up, not counted
                empty_table(database)
                exporter = _span_exporter() if args.spans else None
                for count in sizes:
                    for chunk_size in chunk_sizes:
                        durable, plain, spans, cpu = [], [], Counter(), []
                        PLAIN_CPU.clear()
                        for _ in range(args.repeat):
                            if exporter is not None:
                                exporter.clear()
                            run = durable_import(settings, database, api, count, chunk_size)
                            durable.append(run["seconds"])
                            cpu.append(run["cpu_seconds"])
                            plain.append(plain_insert(database, args.plain_batch))
                            if exporter is not None:
                                for span in exporter.get_finished_spans():
                                    spans[span.name] += (span.end_time - span.start_time) / 1e9
                        run["seconds"], run["plain_seconds"] = statistics.median(durable), statistics.median(plain)
                        run["durable_runs"], run["plain_runs"] = durable, plain
                        run["durable_rate"] = count / run["seconds"]
                        run["plain_rate"] = count / run["plain_seconds"]
                        run["ratio"] = run["durable_rate"] / run["plain_rate"]
                        results.append(run)
                        print(f"{count:>7,} people  chunk {chunk_size:>5} ({run['chunks']:>4} chunks, pages of "
                              f"{run['page_size']})  durable {run['seconds']:6.2f} s {run['durable_rate']:8,.0f}/s  "
                              f"plain {run['plain_seconds']:6.2f} s {run['plain_rate']:8,.0f}/s  "
                              f"ratio {run['ratio']:.2f}  (median of {args.repeat})", flush=True)
                        run["cpu_seconds"], run["plain_cpu_seconds"] = statistics.median(cpu), statistics.median(PLAIN_CPU)
                        print(f"         this process's CPU: durable {run['cpu_seconds']:.2f} s, "
                              f"plain {run['plain_cpu_seconds']:.2f} s")
                        if spans:
                            print("         span seconds summed over runs: " + ", ".join(
                                f"{name} {seconds / args.repeat:.2f}" for name, seconds in sorted(spans.items())))
            finally:
                workflows.stop(grace_seconds=1)
                database.dispose()
    finally:
        api_proc.terminate()
        api_proc.wait(timeout=10)
        with maintenance.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        maintenance.dispose()
    if args.json:
        out = REPO / "bench" / "results" / "import_throughput.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
        print(f"wrote {out}")
    sys.stdout.flush()
    os._exit(0)  # DBOS executor threads need not be joined


if __name__ == "__main__":
    main()
