"""How a command that launched DBOS ends its process."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def leave(status: int) -> NoReturn:
    """Exit now, without joining DBOS's executor threads.

    Workflows waiting in DBOS.recv (a pending decision, a grant's end) sit in executor
    threads that DBOS.destroy() does not wake, so the interpreter would wait for them at
    exit. Their state is durable and the next process with this executor id recovers them.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(status)
