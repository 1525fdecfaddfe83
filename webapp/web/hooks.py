"""`POST /hooks/demo`: the demo's webhook receiver (webapp.services.demo_receiver). Public, and
authenticated by its HMAC signature alone: anything unsigned, stale or tampered with gets a
403 and changes nothing."""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.agents.webhook import verify
from webapp.services.demo_receiver import PATH, demo_secret, record_delivery
from webapp.web.database import in_session
from webapp.web.security import Access, guarded_route

MAX_BODY = 64 * 1024


async def demo_receiver(request: Request) -> Response:
    """Accept one signed grant or revoke from the demo's webhook agent and keep it in the outbox."""
    body = await request.body()
    secret = demo_secret(request.app.state.settings.session_secret)
    timestamp = request.headers.get("x-gatehouse-timestamp", "")
    if len(body) > MAX_BODY or not verify(secret, timestamp, body, request.headers.get("x-gatehouse-signature", "")):
        return JSONResponse({"error": "Unsigned, stale or altered: not accepted.", "status": 403}, status_code=403)
    key = request.headers.get("idempotency-key", "").strip()
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if not key or not isinstance(payload, dict):
        return JSONResponse({"error": "A JSON object and an Idempotency-Key are required.", "status": 400},
                            status_code=400)
    recorded = await in_session(request, lambda s: record_delivery(s, payload, key[:200]))
    if not recorded:
        return JSONResponse({"recorded": False, "note": "already delivered"}, status_code=409)
    return JSONResponse({"recorded": True})


routes = [guarded_route(PATH, demo_receiver, access=Access.public, methods=["POST"], signed=True)]
