"""`GET /events`: one server-sent event stream per browser tab.

Each event is an audit row the viewer may see, sent as a few messages (the changed table
row, a toast, the activity entry: webapp/web/live_messages.py) of which the last carries
the audit id as SSE id, so a browser that reconnects with `Last-Event-ID` first gets what
it missed from the table, in order, then the live tail. After a burst of changes to
requests or grants the viewer's dashboard counters follow (webapp/live/counters.py), at most
every COUNTERS_SECONDS. The stream ends cleanly when the server shuts down
(webapp/web/streams.py), and browsers reconnect (to another process, behind a load balancer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from sse_starlette import ServerSentEvent
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from webapp.core.background import in_thread
from webapp.core.forms import plain_int
from webapp.core.ratelimit import SlidingWindowLimiter
from webapp.live.feed import BATCH, latest_event_id, load_events
from webapp.services.access import viewer
from webapp.services.identity import Principal
from webapp.services.overview import Counters
from webapp.web.live_messages import COUNTED, encoded, tasks_nudge
from webapp.web.rendering import render_block, request_context
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.streams import live_stream

# A stream sends the viewer's counters after a burst of changes, and at most this often: each
# sending counts what the viewer may see (per person but for admins, webapp.live.counters).
COUNTERS_SECONDS = 2.0


def last_event_id(request: Request) -> int | None:
    return plain_int(request.headers.get("last-event-id") or request.query_params.get("last_event_id"))


async def _counters(request: Request, principal: Principal, as_of: int) -> ServerSentEvent:
    """The dashboard counters section for this viewer, which replaces itself on the page."""

    def as_html(counters: Counters) -> str:
        return render_block(request, "home.html", {"counters": counters}, "counters")

    return ServerSentEvent(data=await request.app.state.counters.html(principal, as_of, as_html), event="counters")


def connect_limiter(request: Request) -> SlidingWindowLimiter:
    state = request.app.state
    if not hasattr(state, "connect_limiter"):
        state.connect_limiter = SlidingWindowLimiter(state.settings.live_connects_per_minute, 60.0)
    return state.connect_limiter  # type: ignore[no-any-return]


async def events(request: Request) -> Response:
    """Audit events this viewer may see, replayed from Last-Event-ID and then live.

    The replay reads only what the viewer may see (in SQL) and goes back at most
    LIVE_REPLAY_LIMIT events: a page away for longer is told to reload instead. A person
    keeps at most LIVE_STREAMS_PER_PERSON streams and opens at most LIVE_CONNECTS_PER_MINUTE
    a minute (429 with Retry-After; the browser's EventSource tries again later)."""
    principal = current_principal(request)
    settings = request.app.state.settings
    retry_after = connect_limiter(request).hit(f"user:{principal.id}")
    if retry_after is not None:
        raise HTTPException(429, "Too many live connections; this page will try again shortly.",
                            {"Retry-After": str(retry_after)})
    feed = request.app.state.feed
    database = request.app.state.db
    resume_after = last_event_id(request)
    subscription = feed.subscribe(owner=principal.id)  # before the replay, so nothing falls between the two

    env = request.app.state.templates.env
    context = request_context(request)  # the viewer's zone and CSRF token, for the whole stream

    async def stream() -> AsyncIterator[ServerSentEvent | bytes]:
        loop = asyncio.get_running_loop()
        replayed: set[int] = set()
        try:
            cursor = resume_after
            if cursor is not None:
                latest = await in_thread(latest_event_id, database)
                if latest - cursor > settings.live_replay_limit:  # too much to replay: reload instead
                    yield ServerSentEvent(data=render_block(request, "_live_event.html", {}, "stale"), event="toast",
                                          id=str(latest))
                    cursor = None
            seen_by = await database.in_session(lambda s: viewer(s, principal)) if cursor is not None else None
            while cursor is not None:  # the backlog, in pages
                backlog = await in_thread(load_events, database, after=cursor, viewer=seen_by)
                for event in backlog:
                    replayed.add(event.id)
                    yield encoded(env, context, event, principal)
                cursor = backlog[-1].id if len(backlog) == BATCH else None
            counted_up_to = None  # the last event that may have moved this viewer's counters
            counters_due = 0.0  # when this stream may send counters again (loop time)
            while True:
                wait = None
                if counted_up_to is not None and subscription.queue.empty():  # the end of a burst
                    wait = counters_due - loop.time()
                    if wait <= 0:
                        yield await _counters(request, principal, counted_up_to)
                        counted_up_to, counters_due, wait = None, loop.time() + COUNTERS_SECONDS, None
                if subscription.dropped and subscription.queue.empty():
                    return  # fell behind and was dropped: the browser reconnects and replays
                try:
                    event = await asyncio.wait_for(subscription.queue.get(), wait)
                except TimeoutError:
                    continue  # the counters are due
                if event is None:  # the server is shutting down, or this person opened too many streams
                    return
                if event.id in replayed:
                    continue
                if not event.visible_to(principal.id, principal.is_admin):
                    if principal.id in event.task_audience and event.moves_tasks:
                        yield tasks_nudge(event)
                    continue
                yield encoded(env, context, event, principal)
                if event.action.startswith(COUNTED):
                    counted_up_to = event.id
        finally:
            feed.unsubscribe(subscription)

    return live_stream(stream(), feed=feed, subscription=subscription)


routes = [guarded_route("/events", events, access=Access.member)]
