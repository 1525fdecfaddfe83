"""Executor heartbeat rows: each process says, every few seconds, that it is still there.

DBOS records which executor runs each workflow but keeps no table of the executors
themselves, so a process that died looks the same as one that is idle. Each process
upserts its own `executor_heartbeat` row at start and then every
`heartbeat_interval_seconds` (webapp.workflows.heartbeat); the ops console calls a row
older than `GONE_AFTER` intervals gone. The row outlives the process on purpose: that is
how a crash shows.
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


def list_executors(session: Session) -> list[ExecutorHeartbeat]:
    return list(session.scalars(sa.select(ExecutorHeartbeat).order_by(
        ExecutorHeartbeat.last_seen.desc(), ExecutorHeartbeat.executor_id)))  # type: ignore[attr-defined]


def is_gone(last_seen: datetime, now: datetime, interval_seconds: float) -> bool:
    return now - last_seen > timedelta(seconds=GONE_AFTER * interval_seconds)
