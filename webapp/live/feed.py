"""The live feed: one tailer of the audit table per process, fanned out to SSE clients.

The audit table is the source of truth and its id is the SSE event id. Each process runs
one `AuditFeed`: woken by PostgreSQL NOTIFY (sent in the same transaction as the audit
row) or, on SQLite, by a short poll, it reads the new rows once and hands them to every
subscriber's bounded queue. A subscriber that falls behind is dropped (its browser
reconnects with Last-Event-ID and replays from the table), so memory stays bounded.

PostgreSQL hands out ids before commit, so rows can become visible out of id order. The
tailer therefore reads from its last *contiguous* id and remembers what it already
delivered above it; a hole that stays open for `gap_timeout` seconds is a rolled-back
insert and is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from webapp.core.background import cancel_within, in_thread
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Approval, AuditEvent, ResourceApprover
from webapp.services.access import Viewer, visible_to
from webapp.services.audit import NOTIFY_CHANNEL
from webapp.services.request_table import RequestRow, load_rows
from webapp.services.tasks import assignee_ids_by_request

log = logging.getLogger(__name__)
BATCH = 500
FULFILMENT = ("grant.", "task.", "agent.", "drift.")  # the prefixes of the Actions that move tasks
STOP_SECONDS = 5.0


@dataclass(frozen=True)
class FeedEvent:
    """An audit row plus who may see it (None: admins only)."""

    id: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    request_id: int | None = None
    audience: frozenset[int] | None = None
    actor_id: int | None = None
    # The request's row as it is now, its approvers and who of them has approved: enough
    # to render the row for any viewer without another query.
    row: RequestRow | None = None
    approvers: frozenset[int] = frozenset()
    approved_by: frozenset[int] = frozenset()
    # Who would do the request's manual tasks: they hear that something changed (no more).
    task_audience: frozenset[int] = frozenset()
    # HTML rendered for this event, shared by every stream that sends it (webapp/web/live_messages.py).
    rendered: dict[Any, str] = field(default_factory=dict, compare=False, repr=False)

    def visible_to(self, user_id: int, is_admin: bool) -> bool:
        return is_admin or (self.audience is not None and user_id in self.audience)

    @property
    def moves_queue(self) -> bool:
        """The requests waiting for a decision may have changed (the count beside "Waiting for me")."""
        return self.row is not None and self.action.startswith("request.")

    @property
    def moves_tasks(self) -> bool:
        """Task lists, task pages and agent pages may have changed."""
        return self.action.startswith(FULFILMENT)


def load_events(database: Database, *, after: int, limit: int = BATCH, ids: list[int] | None = None,
                viewer: Viewer | None = None) -> list[FeedEvent]:
    """Audit rows after `after` (or exactly `ids`), each with the people allowed to see it.
    A handful of queries per batch, whatever the number of subscribers. With `viewer` (a
    replay for one person) only the rows they may see are read: the filter runs in SQL, over
    the index on (request_id, id), so a replay costs what it sends, not the table's size."""
    with database.session() as session:
        query = sa.select(AuditEvent).order_by(AuditEvent.id).limit(limit)  # type: ignore[arg-type]
        query = query.where(AuditEvent.id.in_(ids)) if ids else query.where(AuditEvent.id > after)  # type: ignore[union-attr, operator]
        if viewer is not None and not viewer.principal.is_admin:
            seen = sa.select(AccessRequest.id).where(visible_to(viewer))
            query = query.where(AuditEvent.request_id.in_(seen))  # type: ignore[union-attr]
        events = list(session.scalars(query).all())
        wanted = sorted({e.request_id for e in events if e.request_id is not None})
        rows = {row.id: row for row in load_rows(session, wanted)}
        approvers: dict[int, set[int]] = {}
        approved: dict[int, set[int]] = {}
        if wanted:
            for request_id, approver_id in session.execute(
                sa.select(AccessRequest.id, ResourceApprover.user_id)
                .join(ResourceApprover, ResourceApprover.resource_id == AccessRequest.resource_id)
                .where(AccessRequest.id.in_(wanted))  # type: ignore[union-attr]
            ):
                approvers.setdefault(request_id, set()).add(approver_id)
            for request_id, approver_id in session.execute(
                sa.select(Approval.request_id, Approval.approver_id)
                .where(Approval.request_id.in_(wanted), Approval.counted)  # type: ignore[attr-defined]
            ):
                approved.setdefault(request_id, set()).add(approver_id)
        moving = sorted({e.request_id for e in events if e.request_id is not None and e.action.startswith(FULFILMENT)})
        doers = assignee_ids_by_request(session, moving) if moving else {}
        return [_feed_event(e, e.request_id, rows, approvers, approved, doers) for e in events]


def _feed_event(event: AuditEvent, request_id: int | None, rows: dict[int, RequestRow],
                approvers: dict[int, set[int]], approved: dict[int, set[int]],
                doers: dict[int, frozenset[int]]) -> FeedEvent:
    row = rows.get(request_id) if request_id is not None else None
    audience = None if row is None else frozenset({row.requester_id, *approvers.get(row.id, ())})
    return FeedEvent(
        event.id, event.at, event.actor, event.action, event.subject, event.details or {},  # type: ignore[arg-type]
        request_id, audience, event.actor_id, row,
        frozenset(approvers.get(request_id, ())) if request_id is not None else frozenset(),
        frozenset(approved.get(request_id, ())) if request_id is not None else frozenset(),
        doers.get(request_id, frozenset()) if request_id is not None and event.action.startswith(FULFILMENT)
        else frozenset(),
    )


def latest_event_id(database: Database) -> int:
    with database.session() as session:
        return session.scalar(sa.select(sa.func.max(AuditEvent.id))) or 0


@dataclass(eq=False)  # identity, not value: subscriptions live in a set
class Subscription:
    queue: asyncio.Queue[FeedEvent | None]
    owner: int | None = None  # the person whose stream it is (None: not counted per person)
    dropped: bool = False


@dataclass
class AuditFeed:
    database: Database
    poll_interval: float = 0.25
    gap_timeout: float = 5.0
    queue_size: int = 1000
    listen_url: str | None = None
    streams_per_person: int = 10  # beyond this a person's oldest stream closes
    subscribers: set[Subscription] = field(default_factory=set)
    _by_owner: dict[int, list[Subscription]] = field(default_factory=dict)
    _cursor: int = 0
    _delivered_above: set[int] = field(default_factory=set)
    _gap_since: float | None = None
    _task: asyncio.Task[None] | None = None
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        self._cursor = await in_thread(latest_event_id, self.database)
        self._task = asyncio.create_task(self._run(), name="audit-feed")

    async def stop(self) -> None:
        """Close every stream (browsers reconnect, maybe to another process) and stop tailing.

        Bounded: a tailer stuck in a database call must not hold up the server's shutdown."""
        for subscription in list(self.subscribers):
            self.close(subscription)
        if self._task is not None:
            await cancel_within(self._task, STOP_SECONDS, "live feed tailer")

    def subscribe(self, owner: int | None = None) -> Subscription:
        """A new stream; a person's streams beyond `streams_per_person` close, oldest first,
        so one person opening hundreds of tabs or connections cannot hold the memory."""
        subscription = Subscription(asyncio.Queue(self.queue_size), owner)
        self.subscribers.add(subscription)
        if owner is not None:
            theirs = self._by_owner.setdefault(owner, [])
            theirs.append(subscription)
            while len(theirs) > self.streams_per_person:
                self.close(theirs[0])
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscribers.discard(subscription)
        self._forget(subscription)

    def _forget(self, subscription: Subscription) -> None:
        theirs = self._by_owner.get(subscription.owner) if subscription.owner is not None else None
        if theirs is not None and subscription in theirs:
            theirs.remove(subscription)
            if not theirs:
                del self._by_owner[subscription.owner]  # type: ignore[arg-type]

    def wake(self) -> None:
        self._wake.set()

    def close(self, subscription: Subscription) -> None:
        """End one stream: its reader gets None (or, when its queue is full, sees it dropped)."""
        subscription.dropped = True
        self.subscribers.discard(subscription)
        self._forget(subscription)
        with contextlib.suppress(asyncio.QueueFull):
            subscription.queue.put_nowait(None)

    def publish(self, events: list[FeedEvent]) -> None:
        for subscription in list(self.subscribers):
            for event in events:
                try:
                    subscription.queue.put_nowait(event)
                except asyncio.QueueFull:
                    subscription.dropped = True  # too slow: drop it rather than buffer forever
                    self.subscribers.discard(subscription)
                    self._forget(subscription)
                    break

    async def _run(self) -> None:
        listener = asyncio.create_task(self._listen()) if self.listen_url else None
        try:
            while True:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.poll_interval)
                self._wake.clear()
                try:
                    await self.poll_once()
                except Exception:  # the database may be briefly away; keep tailing
                    log.warning("live feed poll failed", exc_info=True)
                    await asyncio.sleep(1)
        finally:
            if listener is not None:
                await cancel_within(listener, STOP_SECONDS / 2, "live feed LISTEN connection")

    async def poll_once(self) -> list[FeedEvent]:
        if not self.subscribers:
            # Nobody listens: just keep up with the table (browsers that connect later
            # replay from their Last-Event-ID), instead of loading rows for no one.
            latest = await in_thread(latest_event_id, self.database)
            if not self.subscribers:  # still nobody: a stream that subscribed meanwhile may
                self._cursor = latest  # have replayed before rows that `latest` counts
                self._delivered_above.clear()
                self._gap_since = None
            return []
        events = await in_thread(load_events, self.database, after=self._cursor)
        fresh = [e for e in events if e.id not in self._delivered_above]
        if fresh:
            self.publish(fresh)
        self._advance([e.id for e in events])
        return fresh

    def _advance(self, ids: list[int]) -> None:
        """Move the cursor over every id now known; wait out a hole for a while, then skip it."""
        self._delivered_above.update(ids)
        while self._cursor + 1 in self._delivered_above:
            self._cursor += 1
            self._delivered_above.discard(self._cursor)
        if not self._delivered_above:
            self._gap_since = None
            return
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
        elif now - self._gap_since > self.gap_timeout:
            self._cursor = min(self._delivered_above) - 1  # the hole was a rollback
            self._gap_since = None
            self._advance([])

    async def _listen(self) -> None:
        """PostgreSQL: wake the tailer on every committed audit row."""
        import psycopg

        while True:
            conn = None
            try:
                conn = await psycopg.AsyncConnection.connect(self.listen_url, autocommit=True)  # type: ignore[arg-type]
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                self.wake()  # anything committed while we were not listening
                async for _notify in conn.notifies():
                    self.wake()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("live feed LISTEN connection lost; retrying", exc_info=True)
                await asyncio.sleep(1)
            finally:
                if conn is not None:  # closed here on every path, cancellation included
                    await conn.close()
