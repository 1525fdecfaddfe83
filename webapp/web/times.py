"""Times as people read them: "3 h ago", "in 2 days", with the exact time in the viewer's
own time zone on hover and for screen readers, rendered on the server.

The viewer's zone is their setting (/account), else what their browser said (the `gh_tz`
cookie, set by static/app.js), else UTC. Every time is a `<time datetime>` that never wraps.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from urllib.parse import unquote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from markupsafe import Markup, escape

from webapp.core.models import utcnow

TZ_COOKIE = "gh_tz"
MINUTE, HOUR, DAY = 60, 3600, 86400


@lru_cache(maxsize=1)
def zone_names() -> frozenset[str]:
    """The IANA names this machine knows, for the setting's choices and to check the cookie."""
    return frozenset(available_timezones() | {"UTC"})


@lru_cache(maxsize=512)
def zone(name: str | None) -> ZoneInfo:
    """The zone called `name`, or UTC for anything unknown (a stale or forged cookie)."""
    if not name or name not in zone_names():
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def browser_zone_name(cookies: Mapping[str, str]) -> str:
    """The zone the browser said (static/app.js percent-encodes it: "Asia%2FTokyo"), if known."""
    name = unquote(cookies.get(TZ_COOKIE, ""))
    return name if name in zone_names() else ""


def relative(moment: datetime, now: datetime) -> str:
    """How long ago or ahead `moment` is, in the largest unit that fits; beyond 30 days, the date."""
    seconds = (moment - now).total_seconds()
    ahead, span = seconds > 0, abs(seconds)
    if span < 45:
        return "just now" if not ahead else "in under a minute"
    if span >= 30 * DAY:
        return moment.strftime("%-d %b %Y")
    minutes, hours, days = round(span / MINUTE), round(span / HOUR), round(span / DAY)
    if minutes < 60:
        amount = f"{max(1, minutes)} min"
    elif hours < 24:
        amount = f"{hours} h"
    else:
        amount = f"{days} day{'s' if days != 1 else ''}"
    return f"in {amount}" if ahead else f"{amount} ago"


def exact(moment: datetime, where: ZoneInfo, *, seconds: bool = False) -> str:
    """The moment in the viewer's zone: "Tue 1 Dec 2026, 14:05 CET"."""
    local = moment.astimezone(where)
    return local.strftime(f"%a %-d %b %Y, %H:%M{':%S' if seconds else ''} %Z")


def when(moment: datetime | None, where: ZoneInfo, *, style: str = "relative", empty: str = "—",
         now: datetime | None = None) -> Markup:
    """`<time>` for a moment. `relative`: "3 h ago" with the exact time in its title and for
    screen readers; `exact`: the exact time, seconds included; `both`: exact, then relative."""
    if moment is None:
        return Markup(escape(empty))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    precise = exact(moment, where, seconds=True)
    if style == "exact":
        shown = precise
    else:
        ago = relative(moment, now or utcnow())
        shown = f"{exact(moment, where)} ({ago})" if style == "both" else ago
    # class "ago": printed pages add the exact time after it (app.css), as paper has no hover.
    return Markup('<time datetime="{}" title="{}"{}>{}</time>').format(
        moment.astimezone(UTC).isoformat(timespec="seconds"), precise,
        Markup(' class="ago"') if style == "relative" else "", shown)
