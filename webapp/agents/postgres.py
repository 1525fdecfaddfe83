"""PostgreSQL role membership: `GRANT <role> TO <login>` and `REVOKE`.

The person's login comes from a template over their email (`{local}`, the part before the
@, by default; `{email}` for the whole address). Both statements are idempotent in
PostgreSQL (a repeated GRANT or a REVOKE of a non-member only warns), and both names are
checked first so that a missing role or login is a clear refusal, not a half-applied change.
The agent connects with its own login, which needs CREATEROLE (or ADMIN on the roles).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from webapp.agents.base import Change, Person, Refused, SecretRef, Unreachable

CONNECT_SECONDS = 5
# SQLSTATE classes that mean "this login may not": retrying cannot help.
REFUSED_STATES = ("28", "42")


@dataclass(frozen=True)
class PostgresAgent:
    """Settings: host, port, dbname, user, password_env/password_file, login_template."""

    host: str
    port: int
    dbname: str
    user: str
    password: SecretRef
    login_template: str = "{local}"

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PostgresAgent:
        return cls(config.get("host", "127.0.0.1"), int(config.get("port", 5432)), config.get("dbname", "postgres"),
                   config.get("user", "postgres"), SecretRef.of(config, "password"),
                   config.get("login_template") or "{local}")

    def member_name(self, person: Person) -> str:
        return self.login_template.format(local=person.local_part, email=person.email).lower()

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(host=self.host, port=self.port, dbname=self.dbname, user=self.user,
                                   password=self.password.read() or None, connect_timeout=CONNECT_SECONDS,
                                   # a GRANT stuck behind a lock must not hold the agent's queue slot for ever
                                   options="-c statement_timeout=10000 -c lock_timeout=5000",
                                   autocommit=True, application_name="gatehouse-agent")
        except psycopg.OperationalError as exc:
            text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            if "authentication failed" in text or "does not exist" in text or "no pg_hba.conf entry" in text:
                raise Refused(f"PostgreSQL at {self.host}:{self.port} refused the agent's login: {text}") from None
            raise Unreachable(f"PostgreSQL at {self.host}:{self.port} did not answer: {text}") from None

    def _run(self, statement: sql.Composable | str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._connect() as conn:
            try:
                cursor = conn.execute(statement, params)
                return cursor.fetchall() if cursor.description else []
            except psycopg.Error as exc:
                state = exc.sqlstate or ""
                message = exc.diag.message_primary or str(exc)
                if state.startswith(REFUSED_STATES):
                    raise Refused(f"PostgreSQL refused: {message}") from None
                raise Unreachable(f"PostgreSQL failed: {message}") from None

    def _role_exists(self, name: str) -> bool:
        return bool(self._run("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))

    def _require_roles(self, role: str, login: str) -> None:
        found = {name for (name,) in self._run("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", ([role, login],))}
        if role not in found:
            raise Refused(f"There is no role {role!r} in PostgreSQL at {self.host}:{self.port}.")
        if login not in found:
            raise Refused(f"There is no login {login!r} for this person in PostgreSQL at {self.host}:{self.port}.")

    def add(self, person: Person, group: str, change: Change | None = None) -> None:
        login = self.member_name(person)
        self._require_roles(group, login)
        self._run(sql.SQL("GRANT {} TO {}").format(sql.Identifier(group), sql.Identifier(login)))

    def remove(self, person: Person, group: str, change: Change | None = None) -> None:
        """A person with no login cannot be a member: nothing to remove (a missing role is refused)."""
        login = self.member_name(person)
        try:
            self._require_roles(group, login)
        except Refused:
            if self._role_exists(group):
                return
            raise
        self._run(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(login)))

    def members(self, group: str) -> set[str]:
        rows = self._run("SELECT r.rolname FROM pg_roles g JOIN pg_auth_members m ON m.roleid = g.oid "
                         "JOIN pg_roles r ON r.oid = m.member WHERE g.rolname = %s", (group,))
        if not rows and not self._run("SELECT 1 FROM pg_roles WHERE rolname = %s", (group,)):
            raise Refused(f"There is no role {group!r} in PostgreSQL at {self.host}:{self.port}.")
        return {name for (name,) in rows}

    def names_for(self, people: list[Person]) -> dict[str, str]:
        return {person.email: self.member_name(person) for person in people}

    def remove_member(self, group: str, name: str) -> None:
        self._run(sql.SQL("REVOKE {} FROM {}").format(sql.Identifier(group), sql.Identifier(name)))

    def check(self) -> str:
        [(user, version, can)] = self._run(
            "SELECT current_user, current_setting('server_version'), rolsuper OR rolcreaterole "
            "FROM pg_roles WHERE rolname = current_user")
        if not can:
            raise Refused(f"Connected as {user}, which lacks CREATEROLE: it cannot grant roles.")
        return f"Connected to PostgreSQL {version} as {user}, which can grant roles."
