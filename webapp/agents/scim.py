"""SCIM 2.0 group membership (RFC 7644): `PATCH /Groups/{id}` adding or removing a member,
through scim2-client (which builds and validates the payloads) over httpx2.

The person's SCIM user is found by a filter (`userName eq "<email>"` by default). Adding a
member who is there and removing one who is not both succeed (RFC 7644 §3.5.2 makes both
no-ops). 401/403/404 are refusals; network errors, 429 and 5xx are worth trying again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_client.errors import (
    RequestNetworkException,
    ResponsePayloadValidationException,
    SCIMClientException,
    SCIMResponseException,
)
from scim2_models import (
    Error,
    Group,
    GroupMember,
    ListResponse,
    PatchOp,
    PatchOperation,
    SCIMException,
    ScimProvider,
    SearchRequest,
    User,
)

from webapp.agents.base import Change, Person, Refused, SecretRef, Unreachable

TIMEOUT_SECONDS = 5
RETRY_STATUSES = {408, 425, 429, 500, 502, 503, 504}
T = TypeVar("T")
PROVIDER = ScimProvider(models=[User, Group])  # what the agent expects of the server: Users and Groups


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class ScimAgent:
    """Settings: url (the SCIM base), token_env/token_file (a bearer token), user_filter."""

    url: str
    token: SecretRef
    user_filter: str = "userName eq {email}"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ScimAgent:
        return cls(config.get("url", "").rstrip("/"), SecretRef.of(config, "token"),
                   config.get("user_filter") or "userName eq {email}")

    @contextmanager
    def _client(self) -> Iterator[SyncSCIMClient]:
        token = self.token.read()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        with Client(base_url=self.url, headers=headers, timeout=TIMEOUT_SECONDS) as http:
            yield SyncSCIMClient(http, provider=PROVIDER)

    def _call(self, doing: str, operation: Callable[[SyncSCIMClient], T]) -> T:
        try:
            with self._client() as client:
                answer = operation(client)
        except RequestNetworkException as exc:
            raise Unreachable(f"The SCIM server at {self.url} did not answer while {doing}: "
                              f"{'; '.join(getattr(exc, '__notes__', [])) or exc}") from None
        except ResponsePayloadValidationException as exc:
            raise Refused(f"The SCIM server at {self.url} answered {doing} with a payload that is not valid SCIM: "
                          f"{exc.__cause__ or exc}") from None
        except SCIMResponseException as exc:
            status = getattr(getattr(exc, "response", None), "status_code", None)
            self._refuse_or_retry(doing, status, str(exc))
        except SCIMException as exc:  # the server's SCIM error, raised by the client
            self._refuse_or_retry(doing, exc.status, str(exc))
        except SCIMClientException as exc:
            raise Refused(f"The SCIM server at {self.url} answered {doing} unexpectedly: {exc}") from None
        if isinstance(answer, Error):
            self._refuse_or_retry(doing, int(answer.status or 0), answer.detail or answer.scim_type or "error")
        return answer

    def _refuse_or_retry(self, doing: str, status: int | None, detail: str) -> None:
        message = f"The SCIM server at {self.url} answered {status or 'an error'} while {doing}: {detail}"
        if status is None or status in RETRY_STATUSES:
            raise Unreachable(message)
        raise Refused(message)

    def _user_id(self, person: Person) -> str:
        wanted = self.user_filter.format(email=_quoted(person.email), local=_quoted(person.local_part))
        found = self._call(f"looking for {person.email}",
                           lambda c: c.query(User, SearchRequest(filter=wanted, count=2, attributes=["id"])))
        resources = found.resources if isinstance(found, ListResponse) else None
        if not resources:
            raise Refused(f"The SCIM server at {self.url} has no user matching {wanted}.")
        if len(resources) > 1:
            raise Refused(f"The SCIM server at {self.url} has several users matching {wanted}; expected one.")
        return str(resources[0].id)

    def _patch(self, person: Person, group: str, operation: PatchOperation[Group]) -> None:
        self._call(f"changing the members of group {group}",
                   lambda c: c.modify(Group, group, PatchOp[Group](operations=[operation])))

    def add(self, person: Person, group: str, change: Change | None = None) -> None:
        user_id = self._user_id(person)
        self._patch(person, group, PatchOperation[Group](op=PatchOperation.Op.add, path="members",
                                                         value=[GroupMember(value=user_id)]))

    def remove(self, person: Person, group: str, change: Change | None = None) -> None:
        try:
            user_id = self._user_id(person)
        except Refused as refused:
            if "has no user matching" in str(refused):
                return  # no account: they cannot be a member, nothing to remove
            raise
        self._patch(person, group, PatchOperation[Group](op=PatchOperation.Op.remove,
                                                         path=f"members[value eq {_quoted(user_id)}]"))

    def members(self, group: str) -> set[str]:
        found = self._call(f"reading group {group}", lambda c: c.query(Group, group))
        return {str(m.value) for m in (getattr(found, "members", None) or []) if m.value}

    def member_name(self, person: Person) -> str:
        return self._user_id(person)

    def names_for(self, people: list[Person]) -> dict[str, str]:
        found = {}
        for person in people:
            try:
                found[person.email] = self._user_id(person)
            except Refused:
                continue  # no account there: reported as a grant without a membership
        return found

    def remove_member(self, group: str, name: str) -> None:
        self._call(f"changing the members of group {group}", lambda c: c.modify(Group, group, PatchOp[Group](
            operations=[PatchOperation[Group](op=PatchOperation.Op.remove, path=f"members[value eq {_quoted(name)}]")])))

    def check(self) -> str:
        self._call("reading its configuration", lambda c: c.discover())
        return f"Reached the SCIM server at {self.url}; it serves Users and Groups."
