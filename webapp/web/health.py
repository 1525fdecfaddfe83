"""Liveness and readiness probes.

`/healthz` answers as long as the process serves HTTP. `/readyz` checks the app
database and the DBOS system database and says which one failed (503).
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import JSONResponse

from webapp.core.background import in_thread
from webapp.web.security import Access, guarded_route
from webapp.workflows import runtime

log = logging.getLogger(__name__)
CHECK_TIMEOUT_SECONDS = 5.0


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process serves HTTP."""
    return JSONResponse({"status": "ok"})


async def _check_database(request: Request) -> None:
    await in_thread(request.app.state.db.ping)


async def _check_dbos(request: Request) -> None:
    await runtime.ping()


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the app database and the DBOS system database answer (503 names the one that failed)."""
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("dbos", _check_dbos)):
        try:
            await asyncio.wait_for(check(request), CHECK_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - any failure means not ready
            log.warning("readiness check %s failed: %s", name, exc)
            checks[name] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


routes = [
    guarded_route("/healthz", healthz, access=Access.public),
    guarded_route("/readyz", readyz, access=Access.public),
]
