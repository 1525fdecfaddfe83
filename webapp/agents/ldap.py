"""LDAP group membership (groupOfNames `member`, groupOfUniqueNames `uniqueMember`), with ldap3.

The person's entry is found by a search on `mail` under the people base; the group's
member attribute follows its object class. Adding a member who is there
(attributeOrValueExists) and removing one who is not (noSuchAttribute) both succeed.
`keep_members` lists DNs the agent never reports as drift nor removes (groupOfNames must
keep one member, so directories often hold a placeholder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ldap3 import BASE, MODIFY_ADD, MODIFY_DELETE, SUBTREE, Connection, Server
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from webapp.agents.base import Change, Person, Refused, SecretRef, Unreachable

TIMEOUT_SECONDS = 5
ALREADY_THERE, NOT_THERE = 20, 16  # attributeOrValueExists, noSuchAttribute: the change is already made
BUSY = {51, 52, 80}  # busy, unavailable, other: try again later
MEMBER_ATTRIBUTE = {"groupofnames": "member", "groupofuniquenames": "uniqueMember"}


def normal_dn(dn: str) -> str:
    """A DN compared as LDAP compares them here: case and spaces around separators ignored."""
    try:
        return ",".join(f"{attr.strip().lower()}={value.strip().lower()}" for attr, value, _sep in parse_dn(dn))
    except ldap_errors.LDAPInvalidDnError:
        return dn.strip().lower()


def _close(conn: Connection) -> None:
    """Close a connection whatever state a failure left it in (ldap3 keeps the socket of a
    failed connect open otherwise)."""
    try:
        conn.unbind()
    except ldap_errors.LDAPException:
        pass
    sock = getattr(conn, "socket", None)
    if sock is not None:
        sock.close()


@dataclass(frozen=True)
class LdapAgent:
    """Settings: url, bind_dn, password_env/password_file, people_base, mail_attribute, keep_members."""

    url: str
    bind_dn: str
    password: SecretRef
    people_base: str
    mail_attribute: str = "mail"
    keep_members: frozenset[str] = field(default_factory=frozenset)

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> LdapAgent:
        return cls(config.get("url", "ldap://127.0.0.1:389"), config.get("bind_dn", ""), SecretRef.of(config, "password"),
                   config.get("people_base", ""), config.get("mail_attribute") or "mail",
                   frozenset(normal_dn(dn) for dn in config.get("keep_members") or []))

    def _connect(self) -> Connection:
        server = Server(self.url, connect_timeout=TIMEOUT_SECONDS)
        conn = Connection(server, user=self.bind_dn or None, password=self.password.read() or None,
                          receive_timeout=TIMEOUT_SECONDS, raise_exceptions=False)
        try:
            bound = conn.bind()
        except ldap_errors.LDAPException as exc:
            _close(conn)
            raise Unreachable(f"The directory at {self.url} did not answer: {exc}") from None
        if not bound:
            self._fail(conn, f"binding as {self.bind_dn or 'anonymous'}")
        return conn

    def _fail(self, conn: Connection, doing: str) -> None:
        result = conn.result or {}
        code, text = result.get("result"), result.get("description") or "no answer"
        message = f"The directory at {self.url} refused {doing}: {text}" + (
            f" ({result['message']})" if result.get("message") else "")
        conn.unbind()
        if code in BUSY or code is None:
            raise Unreachable(message)
        raise Refused(message)

    def _call(self, doing: str, operation: Any) -> Connection:
        conn = self._connect()
        try:
            ok = operation(conn)
        except ldap_errors.LDAPException as exc:
            conn.unbind()
            raise Unreachable(f"The directory at {self.url} failed while {doing}: {exc}") from None
        if not ok:
            self._fail(conn, doing)
        return conn

    def _person_dn(self, conn: Connection, person: Person) -> str:
        query = f"({self.mail_attribute}={escape_filter_chars(person.email)})"
        if not conn.search(self.people_base, query, SUBTREE, attributes=[]) and conn.result["result"] not in (0, 32):
            self._fail(conn, f"searching for {person.email}")
        found = [entry.entry_dn for entry in conn.entries]
        if not found:
            raise Refused(f"No directory entry under {self.people_base} has {self.mail_attribute}={person.email}.")
        if len(found) > 1:
            raise Refused(f"{len(found)} directory entries have {self.mail_attribute}={person.email}; expected one.")
        return str(found[0])

    def _group(self, conn: Connection, group: str) -> tuple[str, list[str]]:
        """The group's member attribute and its members (Refused when there is no such group)."""
        if not conn.search(group, "(objectClass=*)", BASE, attributes=["objectClass", "member", "uniqueMember"]):
            if conn.result["result"] == 32:
                raise Refused(f"There is no group {group} in the directory at {self.url}.")
            self._fail(conn, f"reading {group}")
        entry = conn.entries[0]
        classes = {c.lower() for c in entry.objectClass.values}
        attribute = next((MEMBER_ATTRIBUTE[c] for c in classes if c in MEMBER_ATTRIBUTE), None)
        if attribute is None:
            raise Refused(f"{group} is not a groupOfNames or groupOfUniqueNames.")
        return attribute, [str(v) for v in entry[attribute].values] if attribute in entry else []

    def _change(self, group: str, change: str, done_code: int, member: Callable[[Connection], str | None]) -> None:
        """Add or delete one member of `group`, named by `member(conn)` (None: nothing to do)."""
        conn = self._connect()
        try:
            attribute, _ = self._group(conn, group)
            dn = member(conn)
            if dn is not None and not conn.modify(group, {attribute: [(change, [dn])]}) \
                    and conn.result["result"] != done_code:
                self._fail(conn, f"changing the members of {group}")
        except ldap_errors.LDAPException as exc:
            raise Unreachable(f"The directory at {self.url} failed: {exc}") from None
        finally:
            conn.unbind()

    def _modify(self, person: Person, group: str, change: str, done_code: int) -> None:
        def member(conn: Connection) -> str | None:
            try:
                return self._person_dn(conn, person)
            except Refused:
                if change == MODIFY_DELETE:
                    return None  # no entry for the person: they cannot be a member, nothing to remove
                raise

        self._change(group, change, done_code, member)

    def add(self, person: Person, group: str, change: Change | None = None) -> None:
        self._modify(person, group, MODIFY_ADD, ALREADY_THERE)

    def remove(self, person: Person, group: str, change: Change | None = None) -> None:
        self._modify(person, group, MODIFY_DELETE, NOT_THERE)

    def members(self, group: str) -> set[str]:
        conn = self._connect()
        try:
            _, members = self._group(conn, group)
        finally:
            conn.unbind()
        return {normal_dn(dn) for dn in members} - self.keep_members

    def member_name(self, person: Person) -> str:
        conn = self._connect()
        try:
            return normal_dn(self._person_dn(conn, person))
        finally:
            conn.unbind()

    def names_for(self, people: list[Person]) -> dict[str, str]:
        """One paged search of every entry with a mail under people_base, matched by email."""
        wanted = {person.email.lower() for person in people}
        conn = self._connect()
        try:
            entries = conn.extend.standard.paged_search(self.people_base, f"({self.mail_attribute}=*)", SUBTREE,
                                                        attributes=[self.mail_attribute], paged_size=1000,
                                                        generator=True)
            found: dict[str, str] = {}
            for entry in entries:
                if entry.get("type") != "searchResEntry":
                    continue
                for mail in entry["attributes"].get(self.mail_attribute) or []:
                    if str(mail).lower() in wanted:
                        found[str(mail).lower()] = normal_dn(entry["dn"])
        except ldap_errors.LDAPException as exc:
            raise Unreachable(f"The directory at {self.url} failed while listing people: {exc}") from None
        finally:
            conn.unbind()
        return {person.email: found[person.email.lower()] for person in people if person.email.lower() in found}

    def remove_member(self, group: str, name: str) -> None:
        self._change(group, MODIFY_DELETE, NOT_THERE, lambda _conn: name)

    def check(self) -> str:
        conn = self._call(f"reading {self.people_base}",
                          lambda c: c.search(self.people_base, "(objectClass=*)", BASE, attributes=[]))
        conn.unbind()
        return f"Bound to {self.url} as {self.bind_dn or 'anonymous'}; {self.people_base} is readable."
