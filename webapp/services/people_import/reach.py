"""Where an import may fetch from, and how much it may read: the guard that keeps the
import form from being a port scanner of the internal network or a memory bomb.

A host must be on the allow-list (IMPORT_ALLOWED_HOSTS: names, addresses or networks), and
every address it resolves to must be public, unless that address or its network is on the
list too. The check runs when a job is made (a clear refusal on the form), before each
fetch (names may resolve differently later), and on the address the connection actually
reached. An answer larger than IMPORT_MAX_PAGE_BYTES is refused, by its Content-Length or
while it streams in. What a refusal or a failed fetch says is generic; the detail is logged.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from dataclasses import dataclass, field

from webapp.config import Settings

log = logging.getLogger(__name__)
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class NotAllowed(Exception):
    """The destination is not an allowed import source; the message is for the log only."""


def _network(entry: str) -> IPNetwork | None:
    try:
        return ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return None


@dataclass(frozen=True)
class FetchPolicy:
    allowed: tuple[str, ...] = ("randomuser.me",)
    max_bytes: int = 20_000_000
    names: frozenset[str] = field(init=False, repr=False)
    networks: tuple[IPNetwork, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        entries = [entry.strip().lower().rstrip(".") for entry in self.allowed if entry.strip()]
        networks = tuple(n for n in (_network(entry) for entry in entries) if n is not None)
        object.__setattr__(self, "networks", networks)
        object.__setattr__(self, "names", frozenset(e for e in entries if _network(e) is None))

    @classmethod
    def from_text(cls, allowed: str, max_bytes: int) -> FetchPolicy:
        """From IMPORT_ALLOWED_HOSTS (comma-separated) and IMPORT_MAX_PAGE_BYTES."""
        return cls(tuple(part for part in allowed.split(",") if part.strip()), max_bytes)

    def _listed(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def address_allowed(self, address: IPAddress) -> bool:
        """Public, or on the list: never loopback, private, link-local or reserved by default."""
        return (address.is_global and not address.is_multicast) or self._listed(address)

    def check_host(self, host: str, port: int) -> None:
        """NotAllowed unless `host` is listed and resolves only to allowed addresses."""
        host = host.lower().rstrip(".").strip("[]")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if (literal is None and host not in self.names) or (literal is not None and not self._listed(literal)):
            raise NotAllowed(f"{host} is not in IMPORT_ALLOWED_HOSTS")
        try:
            found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise NotAllowed(f"{host} does not resolve: {exc}") from None
        for *_ignored, sockaddr in found:
            address = ipaddress.ip_address(sockaddr[0])
            if not self.address_allowed(address):
                raise NotAllowed(f"{host} resolves to {address}, which is not public and not allowed")

    def check_peer(self, address: str) -> None:
        """NotAllowed unless the address a connection reached is allowed (a name may have
        resolved differently between the check and the connection)."""
        if not self.address_allowed(ipaddress.ip_address(address)):
            raise NotAllowed(f"the connection reached {address}, which is not public and not allowed")


def fetch_policy(settings: Settings) -> FetchPolicy:
    """The policy the settings ask for (IMPORT_ALLOWED_HOSTS, IMPORT_MAX_PAGE_BYTES)."""
    return FetchPolicy.from_text(settings.import_allowed_hosts, settings.import_max_page_bytes)
