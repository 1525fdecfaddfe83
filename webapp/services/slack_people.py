"""The Gatehouse person behind a Slack user, for decisions made with Slack's buttons.

Slack says who clicked by their Slack user id. Their profile's email, read through Slack's
Web API (`users.info`, which needs the users:read and users:read.email scopes), names the
Gatehouse account; it is cached for CACHE_SECONDS, so a burst of clicks costs one call per
person. A Slack user whose email matches no active account decides nothing.
"""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from sqlalchemy.orm import Session

from webapp.core.emails import normalise_email
from webapp.core.models import User
from webapp.services.identity import Principal, principal_of

CACHE_SECONDS = 600.0
UNKNOWN_USER_ERRORS = {"user_not_found", "user_not_visible", "account_inactive"}


class SlackDirectory:
    """Slack user id -> email, through the Web API, with a small time-bound cache."""

    def __init__(self, client: WebClient, *, cache_seconds: float = CACHE_SECONDS) -> None:
        self.client = client
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def email_of(self, slack_user_id: str) -> str | None:
        """The email on the user's Slack profile; None for a user Slack does not know or
        whose profile shows none. SlackApiError for anything else (a bad token, an outage)."""
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(slack_user_id)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            user = self.client.users_info(user=slack_user_id)["user"]
            email: str | None = (user.get("profile") or {}).get("email") or None
        except SlackApiError as error:
            if error.response.get("error") not in UNKNOWN_USER_ERRORS:
                raise
            email = None
        with self._lock:
            self._cache[slack_user_id] = (email, now + self.cache_seconds)
        return email


def person_by_email(session: Session, email: str) -> Principal | None:
    """The active Gatehouse account with this email, as the principal that decides."""
    user = session.scalar(sa.select(User).where(User.email == normalise_email(email)[:320]))
    return principal_of(user) if user is not None and user.active else None
