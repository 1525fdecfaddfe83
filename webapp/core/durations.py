"""The grant lengths people can ask for, and how they are shown."""

from __future__ import annotations

HOUR = 3600
DAY = 24 * HOUR

# Form value -> seconds (None: permanent). Ordered from shortest to longest.
DURATIONS: dict[str, int | None] = {
    "1h": HOUR,
    "8h": 8 * HOUR,
    "7d": 7 * DAY,
    "30d": 30 * DAY,
    "permanent": None,
}
LABELS = {"1h": "1 hour", "8h": "8 hours", "7d": "7 days", "30d": "30 days", "permanent": "Permanent"}


def duration_key(seconds: int | None) -> str:
    for key, value in DURATIONS.items():
        if value == seconds:
            return key
    raise ValueError(f"{seconds} seconds is not one of the offered durations")


def describe(seconds: int | None) -> str:
    if seconds is None:
        return "permanent"
    if seconds % DAY == 0:
        days = seconds // DAY
        return f"{days} day{'s' if days != 1 else ''}"
    if seconds % HOUR == 0:
        hours = seconds // HOUR
        return f"{hours} hour{'s' if hours != 1 else ''}"
    minutes = max(1, seconds // 60)
    return f"{minutes} minute{'s' if minutes != 1 else ''}"


def allowed(requested: int | None, maximum: int | None) -> bool:
    """A request may not exceed the resource's maximum; permanent needs no maximum."""
    if maximum is None:
        return True
    return requested is not None and requested <= maximum


def time_left(seconds: float) -> str:
    """A countdown for people: "2 d 3 h", "7 h 59 min", "45 min", "under a minute"."""
    seconds = int(seconds)
    if seconds < 60:
        return "under a minute"
    days, rest = divmod(seconds, DAY)
    hours, rest = divmod(rest, HOUR)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min"
