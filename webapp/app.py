"""The app factory: `create_app(settings)` builds one Starlette app.

Its lifespan configures logging, opens the database, starts this process's workflows
(DBOS with a stable executor id and a pinned application version, its queues and
schedules), the live feed and the heartbeat, and on shutdown lets running work finish
before tearing DBOS down.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles

from webapp import workflows
from webapp.config import Settings
from webapp.core import passwords
from webapp.core.background import in_thread
from webapp.core.db import Database, psycopg_url
from webapp.core.logging_setup import configure_logging
from webapp.live.counters import CounterCache
from webapp.live.feed import AuditFeed
from webapp.services.demo_receiver import DEMO_SECRET_ENV, demo_secret
from webapp.web import (
    account,
    admin,
    api,
    events,
    health,
    home,
    hooks,
    oidc,
    ops,
    requests,
    sign_in,
    slack,
    tasks,
    tokens,
)
from webapp.web.csrf import CSRFCookieMiddleware
from webapp.web.errors import EXCEPTION_HANDLERS
from webapp.web.middleware import BodySizeLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from webapp.web.rendering import create_templates
from webapp.workflows.heartbeat import Heartbeat

log = logging.getLogger(__name__)
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
MAX_BODY_BYTES = 1024 * 1024


def app_routes() -> list[BaseRoute]:
    return [
        *health.routes,
        *sign_in.routes,
        *oidc.routes,
        *home.routes,
        *requests.routes,
        *events.routes,
        *tokens.routes,
        *account.routes,
        *tasks.routes,
        *hooks.routes,
        *slack.routes,
        *admin.routes,
        *ops.routes,
        *api.routes,
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    settings.check()
    passwords.use_cost(settings.password_hashing)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        configure_logging(settings.log_level, settings.resolved_log_format)
        database = Database(settings.database_url)
        app.state.db = database
        # seed-demo's webhook agent signs with the demo receiver's secret (an agent reads
        # secrets only from GATEHOUSE_AGENT_* variables): this process hands it over.
        os.environ.setdefault(DEMO_SECRET_ENV, demo_secret(settings.session_secret))
        workflows.start(settings, database)
        feed = AuditFeed(database, poll_interval=settings.live_poll_interval,
                         listen_url=None if settings.uses_sqlite else psycopg_url(settings.database_url),
                         streams_per_person=settings.live_streams_per_person)
        app.state.feed = feed
        app.state.counters = CounterCache(database)
        heartbeat = Heartbeat(database, settings)
        try:
            await in_thread(workflows.register, settings, database)
            await feed.start()
            await heartbeat.start()
            log.info(
                "gatehouse ready",
                extra={"executor_id": settings.executor_id, "app_version": settings.app_version},
            )
            yield
        finally:
            log.info("gatehouse shutting down")
            await heartbeat.stop()
            await feed.stop()
            await in_thread(workflows.stop, grace_seconds=settings.shutdown_grace_seconds)
            database.dispose()

    app = Starlette(
        routes=app_routes(),
        middleware=[
            Middleware(RequestContextMiddleware),
            Middleware(SecurityHeadersMiddleware, hsts=settings.https),
            Middleware(BodySizeLimitMiddleware, max_bytes=MAX_BODY_BYTES),
            Middleware(CSRFCookieMiddleware, secret_key=settings.session_secret, secure=settings.https),
            Middleware(GZipMiddleware, minimum_size=1024),
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.templates = create_templates()
    return app
