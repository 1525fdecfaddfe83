"""What every agent is: a connection to one target system that adds a person to a group,
removes them, lists the group's members, and checks that it can reach the system.

Every operation is idempotent (adding a member who is there, or removing one who is not,
succeeds), so a workflow that retries after a crash ends with exactly the intended
membership. Failures say whether trying again can help: `Unreachable` (the system is down,
slow or busy: the task retries with backoff) or `Refused` (wrong credentials, no such
group, no account for the person: retrying cannot help, a person must act).

Secrets never live in the database or on a page: an agent's settings name an environment
variable or a file that holds them (`SecretRef`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from webapp.agents import reach
from webapp.config import AGENT_SECRET_ENV_PREFIX


class AgentError(Exception):
    """An agent could not do what was asked; the message is a sentence for an operator."""

    transient = False


class Unreachable(AgentError):
    """The target did not answer, or answered that it is busy: trying again later may work."""

    transient = True


class Refused(AgentError):
    """The target answered no (credentials, a missing group or account): a person must act."""


@dataclass(frozen=True)
class Person:
    """Who a grant is for, as the agents need to find them in a target."""

    email: str
    name: str

    @property
    def local_part(self) -> str:
        return self.email.partition("@")[0]


@dataclass(frozen=True)
class SecretRef:
    """Where a secret lives: an environment variable or a file, never the database."""

    env: str | None = None
    file: str | None = None

    def read(self) -> str:
        """The secret; Refused for a variable without the GATEHOUSE_AGENT_ prefix or a file
        outside AGENT_SECRETS_DIR (so settings cannot point at the app's own secrets)."""
        if self.env:
            if not self.env.startswith(AGENT_SECRET_ENV_PREFIX):
                raise Refused(f"An agent's secret must be in an environment variable named {AGENT_SECRET_ENV_PREFIX}*,"
                              f" not {self.env}.")
            value = os.environ.get(self.env)
            if value is None:
                raise Refused(f"The environment variable {self.env} (this agent's secret) is not set.")
            return value
        if self.file:
            place, allowed = Path(self.file).resolve(), reach.secrets_dir().resolve()
            if not place.is_relative_to(allowed):
                raise Refused(f"An agent's secret file must be in AGENT_SECRETS_DIR ({allowed}), not {self.file}.")
            try:
                return place.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise Refused(f"Cannot read this agent's secret from {self.file}: {exc.strerror}.") from None
        return ""

    @classmethod
    def of(cls, config: dict[str, Any], name: str) -> SecretRef:
        """The reference stored as `<name>_env` / `<name>_file` in an agent's settings."""
        return cls(env=config.get(f"{name}_env") or None, file=config.get(f"{name}_file") or None)


@dataclass(frozen=True)
class Change:
    """What a change is for, for agents that tell a system about it (the webhook): the grant,
    when it ends, and a key that names this change across retries."""

    grant_id: int | None
    resource: str
    ends_at: datetime | None
    key: str


class Agent(Protocol):
    """One target system. `group` is the resource's target there (a role, a group DN, a
    SCIM group id, ...); members are returned as the target names them."""

    @property
    def host(self) -> str:
        """The name or address it connects to (checked against AGENT_ALLOWED_HOSTS)."""
        ...

    def add(self, person: Person, group: str, change: Change | None = None) -> None: ...

    def remove(self, person: Person, group: str, change: Change | None = None) -> None: ...

    def members(self, group: str) -> set[str]: ...

    def member_name(self, person: Person) -> str:
        """How `members` names this person (to compare a group with the grants)."""
        ...

    def names_for(self, people: list[Person]) -> dict[str, str]:
        """`member_name` for many people at once (by email; those the target does not know are
        left out), in as few round trips as the protocol allows: a drift check of 10,000."""
        ...

    def remove_member(self, group: str, name: str) -> None:
        """Remove a member as `members` names it (drift correction of access given outside
        Gatehouse, where there is no person to look up). Idempotent."""
        ...

    def check(self) -> str:
        """Reach the target and say what was found (or raise AgentError)."""
        ...
