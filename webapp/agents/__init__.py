"""Agents: connections to the systems where a grant takes effect (issue 13).

    postgres  role membership (GRANT / REVOKE)
    ldap      groupOfNames / groupOfUniqueNames membership, with ldap3
    scim      SCIM 2.0 group membership, with scim2-client
    webhook   a signed POST for every other system

Each speaks one protocol and nothing else: no database rows, no DBOS. The workflows drive
them; webapp/agents/base.py says what an agent is and how its failures read.
"""

from __future__ import annotations

from typing import Any

from webapp.agents import reach
from webapp.agents.base import Agent, Refused
from webapp.agents.ldap import LdapAgent
from webapp.agents.postgres import PostgresAgent
from webapp.agents.scim import ScimAgent
from webapp.agents.webhook import WebhookAgent

KINDS: dict[str, Any] = {"postgres": PostgresAgent, "ldap": LdapAgent, "scim": ScimAgent, "webhook": WebhookAgent}


def agent_for(kind: str, config: dict[str, Any]) -> Agent:
    """The agent of `kind` with these settings (secrets stay where the settings point);
    Refused when its host is not in AGENT_ALLOWED_HOSTS, before anything connects."""
    try:
        agent = KINDS[kind].from_config(config)
    except KeyError:
        raise ValueError(f"There is no {kind!r} agent; the kinds are {', '.join(KINDS)}.") from None
    if not reach.policy().permits(agent.host):
        raise Refused(f"{agent.host or 'This host'} is not in AGENT_ALLOWED_HOSTS: this agent may not connect there.")
    return agent  # type: ignore[no-any-return]
