"""Server-sent event responses for the live pages, which end cleanly when the server stops.

On SIGTERM sse-starlette cancels open streams; cancelled mid-stream, a response never sends
its final empty body and uvicorn logs "ASGI callable returned without completing response".
Here the stop instead closes the stream's feed subscription, so the generator returns, the
response completes, and the browser's EventSource reconnects (to another process, or to
this one once it is back) and replays what it missed with Last-Event-ID.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent

from webapp.live.feed import AuditFeed, Subscription

HEARTBEAT_SECONDS = 15
SEND_TIMEOUT_SECONDS = 10  # a client that does not read for this long is cut off
SHUTDOWN_GRACE_SECONDS = 2.0  # how long a stream has to end by itself once the server stops


def live_stream(events: AsyncIterator[ServerSentEvent | bytes], *, feed: AuditFeed,
                subscription: Subscription) -> EventSourceResponse:
    """`events` as an SSE response; on shutdown `subscription` is closed, which must make
    `events` return."""
    stopping = anyio.Event()

    async def close_on_shutdown() -> None:
        await stopping.wait()
        feed.close(subscription)

    return EventSourceResponse(
        events, ping=HEARTBEAT_SECONDS, send_timeout=SEND_TIMEOUT_SECONDS,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        shutdown_event=stopping, shutdown_grace_period=SHUTDOWN_GRACE_SECONDS, data_sender_callable=close_on_shutdown,
    )
