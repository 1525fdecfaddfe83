"""The heartbeat of this process: its `executor_heartbeat` row, rewritten every few seconds.

An asyncio task of the serving process (webapp.services.executors has the rows and the
rule that calls an executor gone). `stop` is bounded, so shutdown never waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket

from webapp.config import Settings
from webapp.core.background import cancel_within, in_thread
from webapp.core.db import Database
from webapp.core.models import utcnow
from webapp.services.executors import Identity, beat

log = logging.getLogger(__name__)
STOP_SECONDS = 2.0


class Heartbeat:
    """The asyncio task that beats; `stop` is bounded, so shutdown never waits on it."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.interval = settings.heartbeat_interval_seconds
        self.identity = Identity(settings.executor_id, settings.app_version, socket.gethostname(),
                                 os.getpid(), utcnow())
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Beat once before serving, so this process is listed from its first request."""
        await in_thread(self._beat)
        self._task = asyncio.create_task(self._run(), name="executor-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_within(self._task, STOP_SECONDS, "executor heartbeat")
            self._task = None

    def _beat(self) -> None:
        with self.database.session() as session:
            beat(session, self.identity, utcnow())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await in_thread(self._beat)
            except Exception:  # a database hiccup must not end the beating for good
                log.warning("executor heartbeat failed; trying again in %s s", self.interval, exc_info=True)
