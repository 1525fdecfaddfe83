"""Where agents may reach. Hosts: AGENT_ALLOWED_HOSTS, a list of names, addresses and networks
(or `*` for anywhere, the default: agents exist to reach internal systems). An agent whose
host is not listed is refused before any connection or name lookup, so a setting typed on a
page cannot turn the app into a scanner of networks it was never meant to reach. Secrets:
environment variables named GATEHOUSE_AGENT_* and files in AGENT_SECRETS_DIR only
(webapp/agents/base.py `SecretRef`)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class HostPolicy:
    anywhere: bool
    names: frozenset[str]
    networks: tuple[IPNetwork, ...]

    @classmethod
    def from_text(cls, text: str) -> HostPolicy:
        entries = [e.strip().lower().rstrip(".").strip("[]") for e in text.split(",") if e.strip()]
        networks, names = [], []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.append(entry)
        return cls("*" in names, frozenset(n for n in names if n != "*"), tuple(networks))

    def permits(self, host: str) -> bool:
        host = host.lower().rstrip(".").strip("[]")
        if self.anywhere:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names
        return any(address in network for network in self.networks)


_current = [HostPolicy.from_text("*")]
_secrets_dir = [Path("/run/secrets")]


def configure(allowed_hosts: str, secrets_dir: Path | None = None) -> None:
    """Take AGENT_ALLOWED_HOSTS and AGENT_SECRETS_DIR for this process (at each start)."""
    _current[0] = HostPolicy.from_text(allowed_hosts)
    if secrets_dir is not None:
        _secrets_dir[0] = secrets_dir


def policy() -> HostPolicy:
    return _current[0]


def secrets_dir() -> Path:
    return _secrets_dir[0]
