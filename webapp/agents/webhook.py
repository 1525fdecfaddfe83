"""A signed webhook, for every system Gatehouse cannot drive itself: a POST of a JSON body
saying what to do (grant or revoke, the person, the resource and its target, the grant and
when it ends), signed with HMAC-SHA256 over `<timestamp>.<body>`, with an idempotency key
that stays the same across retries of one change.

    X-Gatehouse-Timestamp: 1764500000
    X-Gatehouse-Signature: sha256=<hex of HMAC-SHA256(secret, "1764500000." + body)>
    Idempotency-Key: <the change's key>

2xx means done and 409 means already so; 429 and 5xx (and no answer) are tried again; any
other answer is a refusal a person must look at. A webhook cannot list members, so drift
checks do not apply to it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from webapp.agents.base import AgentError, Change, Person, Refused, SecretRef, Unreachable

TIMEOUT_SECONDS = 10
RETRY_STATUSES = {408, 425, 429}
TOLERANCE_SECONDS = 300


def signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signed: str, *, now: float | None = None) -> bool:
    """What a receiver checks: the signature matches and the timestamp is recent (a replayed
    request from long ago is refused)."""
    try:
        fresh = abs((now or time.time()) - int(timestamp)) <= TOLERANCE_SECONDS
    except ValueError:
        return False
    return fresh and hmac.compare_digest(signature(secret, timestamp, body).encode(), signed.encode())


class NoMembers(AgentError):
    """This kind of agent cannot list a group's members."""


@dataclass(frozen=True)
class WebhookAgent:
    """Settings: url, secret_env/secret_file (the signing secret)."""

    url: str
    secret: SecretRef

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> WebhookAgent:
        return cls(config.get("url", ""), SecretRef.of(config, "secret"))

    def _signing_secret(self) -> str:
        secret = self.secret.read()
        if not secret:
            raise Refused("This webhook has no signing secret (set secret_env or secret_file).")
        return secret

    def _send(self, payload: dict[str, Any], key: str) -> None:
        secret = self._signing_secret()
        body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {"Content-Type": "application/json", "X-Gatehouse-Timestamp": timestamp,
                   "X-Gatehouse-Signature": signature(secret, timestamp, body), "Idempotency-Key": key,
                   "User-Agent": "Gatehouse-agent"}
        try:
            answer = httpx.post(self.url, content=body, headers=headers, timeout=TIMEOUT_SECONDS,
                                follow_redirects=False)
        except httpx.HTTPError as exc:
            raise Unreachable(f"The webhook at {self.url} did not answer: {type(exc).__name__}") from None
        if answer.is_success or answer.status_code == 409:
            return
        message = f"The webhook at {self.url} answered {answer.status_code}: {answer.text[:200].strip()}"
        if answer.status_code >= 500 or answer.status_code in RETRY_STATUSES:
            raise Unreachable(message)
        raise Refused(message)

    def _payload(self, action: str, person: Person, group: str, change: Change | None) -> dict[str, Any]:
        return {"action": action, "person": {"email": person.email, "name": person.name}, "target": group,
                "resource": change.resource if change else None, "grant_id": change.grant_id if change else None,
                "ends_at": change.ends_at.isoformat() if change and change.ends_at else None,
                "key": change.key if change else None}

    def add(self, person: Person, group: str, change: Change | None = None) -> None:
        self._send(self._payload("grant", person, group, change), change.key if change else f"grant:{person.email}")

    def remove(self, person: Person, group: str, change: Change | None = None) -> None:
        self._send(self._payload("revoke", person, group, change), change.key if change else f"revoke:{person.email}")

    def members(self, group: str) -> set[str]:
        raise NoMembers("A webhook cannot list members; drift checks do not apply to it.")

    def member_name(self, person: Person) -> str:
        return person.email

    def names_for(self, people: list[Person]) -> dict[str, str]:
        return {person.email: person.email for person in people}

    def remove_member(self, group: str, name: str) -> None:
        raise NoMembers("A webhook cannot list members; drift checks do not apply to it.")

    def check(self) -> str:
        self._signing_secret()
        try:
            answer = httpx.head(self.url, timeout=TIMEOUT_SECONDS, follow_redirects=False)
        except httpx.HTTPError as exc:
            raise Unreachable(f"The webhook at {self.url} did not answer: {type(exc).__name__}") from None
        return f"The webhook at {self.url} answers (HTTP {answer.status_code} to HEAD)."
