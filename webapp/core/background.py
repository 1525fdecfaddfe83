"""Running blocking work from async code, and stopping long-lived tasks within a bound.

`in_thread` uses the same worker-thread pool as Starlette's `run_in_threadpool` (anyio's),
so the layers below the web share one limit on threads without importing Starlette.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread

log = logging.getLogger(__name__)
P = ParamSpec("P")
T = TypeVar("T")


async def in_thread(func: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run blocking `func` in a worker thread, off the event loop."""
    return await anyio.to_thread.run_sync(functools.partial(func, *args, **kwargs))


async def cancel_within(task: asyncio.Task[Any], seconds: float, what: str) -> None:
    """Cancel `task` and wait at most `seconds` for it to end (`asyncio.wait_for` would wait
    as long as the task takes to honour the cancellation)."""
    task.cancel()
    done, _pending = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("%s did not stop within %s s; leaving it behind", what, seconds)
    elif not task.cancelled() and task.exception() is not None:
        log.warning("%s ended with an error", what, exc_info=task.exception())
