"""Executor heartbeat rows: each process says, every few seconds, that it is still there.

DBOS records which executor runs each workflow but keeps no table of the executors
themselves, so a process that died looks the same as one that is idle. Each process
upserts its own `executor_heartbeat` row at start and then every
`heartbeat_interval_seconds` (webapp.workflows.heartbeat); the ops console calls a row
older than `GONE_AFTER` intervals gone. The row outlives the process on purpose: that is
how a crash shows, and how a live process finds an executor whose lease ran out and adopts
its workflows (webapp.workflows.takeover); the row then says who adopted them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from webapp.core.models import ExecutorHeartbeat

GONE_AFTER = 3  # intervals without a beat


@dataclass(frozen=True)
class Identity:
    executor_id: str
    app_version: str
    hostname: str
    pid: int
    started_at: datetime


def beat(session: Session, me: Identity, now: datetime) -> None:
    """Insert or refresh this process's row (one statement, so two beats never race)."""
    insert = (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)
    values = {"executor_id": me.executor_id, "app_version": me.app_version, "hostname": me.hostname,
              "pid": me.pid, "started_at": me.started_at, "last_seen": now}
    statement = insert(ExecutorHeartbeat).values(**values)
    session.execute(statement.on_conflict_do_update(
        index_elements=["executor_id"], set_={k: v for k, v in values.items() if k != "executor_id"}))


def lease_expired(session: Session, *, me: str, now: datetime, lease_seconds: float,
                  look_back: timedelta = timedelta(days=30)) -> list[str]:
    """Executors (not `me`) whose last beat is older than the lease and not yet adopted
    since; those silent for longer than `look_back` are left alone."""
    cutoff = now - timedelta(seconds=lease_seconds)
    rows = session.scalars(sa.select(ExecutorHeartbeat.executor_id).where(
        ExecutorHeartbeat.executor_id != me, ExecutorHeartbeat.last_seen < cutoff,
        ExecutorHeartbeat.last_seen > now - look_back,
        sa.or_(ExecutorHeartbeat.adopted_at.is_(None),  # type: ignore[union-attr]
               ExecutorHeartbeat.adopted_at < ExecutorHeartbeat.last_seen)))  # type: ignore[operator]
    return list(rows)


def record_adoption(session: Session, executor_id: str, *, by: str, count: int, now: datetime) -> None:
    """Note on the dead executor's row that `by` adopted `count` more of its workflows
    (a row is made for an executor that never beat, such as a killed import CLI)."""
    row = session.get(ExecutorHeartbeat, executor_id)
    if row is None and not count:
        return  # nothing to say about an executor nobody knows
    if row is None:
        row = ExecutorHeartbeat(executor_id=executor_id, app_version="", hostname="", pid=0, started_at=now,
                                last_seen=now - timedelta(days=1))
        session.add(row)
    row.adopted_by, row.adopted_at = by, now
    row.adopted_count = (row.adopted_count or 0) + count


def adopted_while_alive(session: Session, me: Identity) -> str | None:
    """Who adopted this process's executor after this process started (it was thought
    dead: paused, or cut off, for longer than the lease), or None."""
    row = session.get(ExecutorHeartbeat, me.executor_id)
    if row is None or row.adopted_at is None or row.adopted_at <= me.started_at:
        return None
    return row.adopted_by or "another process"


def list_executors(session: Session) -> list[ExecutorHeartbeat]:
    return list(session.scalars(sa.select(ExecutorHeartbeat).order_by(
        ExecutorHeartbeat.last_seen.desc(), ExecutorHeartbeat.executor_id)))  # type: ignore[attr-defined]


def is_gone(last_seen: datetime, now: datetime, interval_seconds: float) -> bool:
    return now - last_seen > timedelta(seconds=GONE_AFTER * interval_seconds)
