"""Liveness and readiness probes.

`/healthz` answers as long as the process serves HTTP. `/readyz` checks the app
database and the DBOS system database and says which one failed (503).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse

from webapp.core.background import in_thread
from webapp.web.security import Access, guarded_route
from webapp.workflows import runtime

log = logging.getLogger(__name__)


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the process serves HTTP."""
    return JSONResponse({"status": "ok"})


async def _check_database(request: Request) -> None:
    await in_thread(request.app.state.db.ping)


async def _check_dbos(request: Request) -> None:
    await runtime.ping()


async def _outcome(request: Request, name: str, check: Callable[[Request], Awaitable[None]], timeout: float) -> str:
    try:
        await asyncio.wait_for(check(request), timeout)
        return "ok"
    except TimeoutError:
        log.warning("readiness check %s: no answer within %g s", name, timeout)
        return f"error: no answer within {timeout:g} s"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        log.warning("readiness check %s failed: %s", name, exc)
        return f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the app database and the DBOS system database answer (503 names the one that
    failed). Both are asked at once and each for at most READY_TIMEOUT_SECONDS, so a hung
    database costs a probe that long, not the sum of the driver's timeouts."""
    timeout = request.app.state.settings.ready_timeout_seconds
    checks = {"database": _check_database, "dbos": _check_dbos}
    outcomes = await asyncio.gather(*(_outcome(request, name, check, timeout) for name, check in checks.items()))
    results = dict(zip(checks, outcomes, strict=True))
    ready = all(value == "ok" for value in results.values())
    return JSONResponse(
        {"status": "ready" if ready else "unavailable", "checks": results},
        status_code=200 if ready else 503,
        headers={"Cache-Control": "no-store"},
    )


routes = [
    guarded_route("/healthz", healthz, access=Access.public),
    guarded_route("/readyz", readyz, access=Access.public),
]
