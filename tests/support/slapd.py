"""A real OpenLDAP `slapd` (Debian's package) on loopback, with a throwaway configuration and
database in a temporary folder, for the LDAP agent's tests and benchmarks.

    with Slapd(tmp_path) as directory:
        directory.add_person("jamal@example.test", "Jamal Carter")
        directory.add_group("cn=aws-production,ou=groups,dc=example,dc=test")
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ldap3 import MODIFY_ADD, Connection, Server

from support.receivers import free_port, wait_until_listening

SLAPD = "/usr/sbin/slapd"
SUFFIX = "dc=example,dc=test"
ADMIN_DN = f"cn=admin,{SUFFIX}"
PEOPLE = f"ou=people,{SUFFIX}"
GROUPS = f"ou=groups,{SUFFIX}"
PLACEHOLDER = f"cn=placeholder,{SUFFIX}"  # groupOfNames needs one member; the agent is told to keep it
CONFIG = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
include /etc/ldap/schema/nis.schema
modulepath /usr/lib/ldap
moduleload back_mdb
pidfile {dir}/slapd.pid
database mdb
maxsize 268435456
suffix "{suffix}"
rootdn "{admin}"
rootpw {password}
directory {dir}/data
index mail eq
index member eq
"""


def available() -> bool:
    return Path(SLAPD).exists()


class Slapd:
    """slapd in the foreground of its own process group; `stop` and `start` keep its data,
    so a test can take the directory down and bring it back."""

    def __init__(self, directory: Path, *, password: str = "directory-secret") -> None:
        self.dir = directory / "slapd"
        self.password = password
        self.port = free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "slapd.conf").write_text(CONFIG.format(dir=self.dir, suffix=SUFFIX, admin=ADMIN_DN,
                                                           password=password))

    def __enter__(self) -> Slapd:
        self.start()
        self._seed()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self) -> None:
        with (self.dir / "slapd.log").open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([SLAPD, "-f", str(self.dir / "slapd.conf"), "-h", f"{self.url}/", "-d", "0"],
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        proc = self.proc
        wait_until_listening(self.port, proc, lambda: f"slapd exited with {proc.returncode}: "
                                                       f"{(self.dir / 'slapd.log').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    @contextmanager
    def admin(self) -> Iterator[Connection]:
        """A connection bound as the directory's root, closed on leaving (ldap3's own `with`
        leaves a connection bound when it was bound before)."""
        conn = Connection(Server(self.url, connect_timeout=2), ADMIN_DN, self.password, auto_bind=True,
                          raise_exceptions=True)
        try:
            yield conn
        finally:
            conn.unbind()

    def _seed(self) -> None:
        with self.admin() as conn:
            conn.add(SUFFIX, ["dcObject", "organization"], {"o": "Example", "dc": "example"})
            conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"})
            conn.add(GROUPS, ["organizationalUnit"], {"ou": "groups"})
            conn.add(PLACEHOLDER, ["organizationalRole"], {"cn": "placeholder"})

    def agent_config(self, **extra: Any) -> dict[str, Any]:
        """An LDAP agent's settings for this directory (the password through an env var)."""
        return {"url": self.url, "bind_dn": ADMIN_DN, "password_env": "GATEHOUSE_AGENT_TEST_LDAP_PASSWORD",
                "people_base": PEOPLE, "keep_members": [PLACEHOLDER], **extra}

    def person_dn(self, email: str) -> str:
        return f"uid={email.partition('@')[0]},{PEOPLE}"

    def add_person(self, email: str, name: str) -> str:
        dn = self.person_dn(email)
        with self.admin() as conn:
            conn.add(dn, ["inetOrgPerson"], {"cn": name, "sn": name.split()[-1], "mail": email,
                                             "uid": email.partition("@")[0]})
        return dn

    def add_group(self, dn: str, *, unique: bool = False) -> str:
        attribute = "uniqueMember" if unique else "member"
        with self.admin() as conn:
            conn.add(dn, ["groupOfUniqueNames" if unique else "groupOfNames"],
                     {"cn": dn.split(",")[0].partition("=")[2], attribute: [PLACEHOLDER]})
        return dn

    def add_member(self, group: str, member_dn: str, *, attribute: str = "member") -> None:
        """By hand, outside Gatehouse (drift)."""
        with self.admin() as conn:
            conn.modify(group, {attribute: [(MODIFY_ADD, [member_dn])]})

    def members(self, group: str) -> set[str]:
        with self.admin() as conn:
            conn.search(group, "(objectClass=*)", "BASE", attributes=["member", "uniqueMember"])
            entry = conn.entries[0]
            values = [*(entry.member.values if "member" in entry else []),
                      *(entry.uniqueMember.values if "uniqueMember" in entry else [])]
        return {str(v).lower() for v in values} - {PLACEHOLDER.lower()}
