"""Agents: connections to the systems where a grant takes effect (issue 13).

    postgres  role membership (GRANT / REVOKE)
    ldap      groupOfNames / groupOfUniqueNames membership, with ldap3
    scim      SCIM 2.0 group membership, with scim2-client
    webhook   a signed POST for every other system

Each speaks one protocol and nothing else: no database rows, no DBOS. The workflows drive
them; webapp/agents/base.py says what an agent is and how its failures read.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from webapp.agents import reach
from webapp.agents.base import Agent, Refused

# Imported when first used: scim2-client alone takes two seconds to import, which every
# process start (and every restart after a crash) would pay for agents it may never run.
KINDS: dict[str, str] = {"postgres": "postgres:PostgresAgent", "ldap": "ldap:LdapAgent", "scim": "scim:ScimAgent",
                         "webhook": "webhook:WebhookAgent"}


def agent_class(kind: str) -> Any:
    module, _, name = KINDS[kind].partition(":")
    return getattr(import_module(f"webapp.agents.{module}"), name)


def agent_for(kind: str, config: dict[str, Any]) -> Agent:
    """The agent of `kind` with these settings (secrets stay where the settings point);
    Refused when its host is not in AGENT_ALLOWED_HOSTS, before anything connects."""
    try:
        agent = agent_class(kind).from_config(config)
    except KeyError:
        raise ValueError(f"There is no {kind!r} agent; the kinds are {', '.join(KINDS)}.") from None
    if not reach.policy().permits(agent.host):
        raise Refused(f"{agent.host or 'This host'} is not in AGENT_ALLOWED_HOSTS: this agent may not connect there.")
    return agent  # type: ignore[no-any-return]
