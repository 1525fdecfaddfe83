"""The heartbeat of this process: its `executor_heartbeat` row, rewritten every few seconds.

An asyncio task of the serving process (webapp.services.executors has the rows and the
rule that calls an executor gone). After each beat it adopts the workflows of executors
whose lease ran out (webapp.workflows.takeover), but only while its own beats are steady:
right after a database outage every other row looks stale too. Before each beat it checks
that nobody adopted this process's own executor meanwhile (it was paused or cut off past
its lease); if someone did, its workflows now run elsewhere, so it exits at once and its
process manager starts it afresh. `stop` is bounded, so shutdown never waits on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time

from webapp.config import Settings
from webapp.core.background import cancel_within, in_thread
from webapp.core.db import Database
from webapp.core.models import utcnow
from webapp.services.executors import Identity, adopted_while_alive, beat
from webapp.workflows import takeover

log = logging.getLogger(__name__)
STOP_SECONDS = 2.0
EXIT_ADOPTED = 75  # EX_TEMPFAIL: restart me


class AdoptedWhileAlive(Exception):
    """Another process adopted this executor's workflows while this process still ran them."""


def exit_process(reason: str) -> None:
    log.critical("%s; exiting so that no workflow runs twice (the process manager starts a fresh one)", reason)
    logging.shutdown()
    os._exit(EXIT_ADOPTED)


class Heartbeat:
    """The asyncio task that beats; `stop` is bounded, so shutdown never waits on it."""

    def __init__(self, database: Database, settings: Settings, *, adopt: bool = True) -> None:
        self.database = database
        self.interval = settings.heartbeat_interval_seconds
        self.lease = settings.executor_lease_seconds
        self.adopt = adopt
        self.identity = Identity(settings.executor_id, settings.app_version, socket.gethostname(),
                                 os.getpid(), utcnow())
        self._task: asyncio.Task[None] | None = None
        self._last_beat: float | None = None  # time.monotonic() of the last beat that worked

    async def start(self) -> None:
        """Beat once before serving, so this process is listed from its first request."""
        await in_thread(self._beat)
        self._task = asyncio.create_task(self._run(), name="executor-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_within(self._task, STOP_SECONDS, "executor heartbeat")
            self._task = None

    def _beat(self) -> bool:
        """Beat; whether the beat before this one worked and was recent (beats are steady)."""
        with self.database.session() as session:
            adopter = adopted_while_alive(session, self.identity)
            if adopter is not None:
                raise AdoptedWhileAlive(f"executor {self.identity.executor_id} was adopted by {adopter} "
                                        "after missing its lease")
            beat(session, self.identity, utcnow())
        now = time.monotonic()
        steady = self._last_beat is not None and now - self._last_beat <= 2 * self.interval
        self._last_beat = now
        return steady

    def _beat_and_adopt(self) -> None:
        if self._beat() and self.adopt:
            takeover.adopt_expired(self.database, me=self.identity.executor_id, lease_seconds=self.lease)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await in_thread(self._beat_and_adopt)
            except AdoptedWhileAlive as adopted:
                exit_process(str(adopted))
            except Exception:  # a database hiccup must not end the beating for good
                log.warning("executor heartbeat failed; trying again in %s s", self.interval, exc_info=True)
