"""The floor for the live feed's fan-out (bench/live_feed.py fanout): a bare sse-starlette
broadcast, in its own process, served by uvicorn as `webapp serve` serves the app.

It LISTENs to the same NOTIFY the app's feed listens to, reads the new audit ids (one query
per wake-up, as the feed does), and sends every client a message of `--payload` bytes per
id, pre-encoded once, through one asyncio queue per client: no authorization, no rendering,
no per-client work beyond the queue and the write. What the app adds over this is the cost of
its feed.

    python bench/bare_sse.py --port 8123 --database-url postgresql://... --payload 3000
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import psycopg
import uvicorn
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

NOTIFY_CHANNEL = "gatehouse_audit"  # webapp.services.audit.NOTIFY_CHANNEL


def make_app(database_url: str, payload: int) -> Starlette:
    clients: set[asyncio.Queue[bytes]] = set()
    filler = "x" * max(0, payload - 40)

    async def tail() -> None:
        async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listen, \
                await psycopg.AsyncConnection.connect(database_url, autocommit=True) as read:
            await listen.execute(f"LISTEN {NOTIFY_CHANNEL}")
            cursor = (await (await read.execute("SELECT coalesce(max(id), 0) FROM audit_events")).fetchone())[0]
            async for _ in listen.notifies():
                rows = await (await read.execute("SELECT id FROM audit_events WHERE id > %s ORDER BY id",
                                                 (cursor,))).fetchall()
                for (event_id,) in rows:
                    message = f"event: audit\r\ndata: {filler}\r\nid: {event_id}\r\n\r\n".encode()
                    for queue in list(clients):
                        queue.put_nowait(message)
                    cursor = event_id

    async def events(request: Request) -> Response:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        clients.add(queue)

        async def stream() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield await queue.get()
            finally:
                clients.discard(queue)

        return EventSourceResponse(stream(), ping=15)

    async def ready(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(tail())
        yield
        task.cancel()

    return Starlette(routes=[Route("/events", events), Route("/readyz", ready)], lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--payload", type=int, default=3000, help="bytes per event, as the app sends")
    args = parser.parse_args()
    url = args.database_url.replace("postgresql+psycopg://", "postgresql://")
    uvicorn.run(make_app(url, args.payload), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
