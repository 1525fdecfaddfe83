"""The dashboard counters for the live feed, computed once per person (once for all admins) per change.

Counters are scoped to what each person may see (webapp.services.overview), so they cannot be
rendered from the audit event alone as rows and toasts are. Each process keeps the last
counters of each person keyed by the audit id they reflect: however many tabs a person
has open on this process, a change costs one count for them, and people who are not
connected cost nothing.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable

from webapp.core.background import in_thread
from webapp.core.db import Database
from webapp.core.models import utcnow
from webapp.services.access import viewer
from webapp.services.identity import Principal
from webapp.services.overview import Counters, load_counters


def scope(principal: Principal) -> int | str:
    """Whose counters these are: every admin sees everything, so admins share theirs; anyone
    else sees their own requests and those of the resources they approve."""
    return "admins" if principal.is_admin else principal.id


class CounterCache:
    def __init__(self, database: Database, size: int = 1000) -> None:
        self.database = database
        self.size = size
        self._counters: OrderedDict[tuple[int | str, int], Counters] = OrderedDict()
        self._locks: dict[tuple[int | str, int], asyncio.Lock] = {}
        self._html: OrderedDict[tuple[int | str, int], str] = OrderedDict()

    async def html(self, principal: Principal, as_of: int, render: Callable[[Counters], str]) -> str:
        """The counters as rendered by `render`, once per scope and audit id like the counts."""
        key = (scope(principal), as_of)
        if key not in self._html:
            self._html[key] = render(await self.get(principal, as_of))
            while len(self._html) > self.size:
                self._html.popitem(last=False)
        return self._html[key]

    async def get(self, principal: Principal, as_of: int) -> Counters:
        """`principal`'s counters as of audit id `as_of` (or later)."""
        key = (scope(principal), as_of)
        if key in self._counters:
            return self._counters[key]
        lock = self._locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                if key not in self._counters:
                    self._counters[key] = await in_thread(self._load, principal)
                    while len(self._counters) > self.size:
                        self._counters.popitem(last=False)
                return self._counters[key]
        finally:
            if not lock.locked():
                self._locks.pop(key, None)

    def _load(self, principal: Principal) -> Counters:
        with self.database.session() as session:
            return load_counters(session, viewer(session, principal), now=utcnow())
