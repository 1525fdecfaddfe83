"""Arranging access requests for a test: a resource with approvers, a submitted request."""

from __future__ import annotations

import uuid
from typing import Any

from starlette.testclient import TestClient

from support.web import post_form
from webapp.core.db import Database
from webapp.core.models import AccessRequest, Agent, Resource, ResourceApprover

REASON = "Investigating the billing incident from last night."


def make_resource(database: Database, people: dict[str, Any], name: str = "orders-db", *, required: int = 1,
                  approvers: tuple[str, ...] = ("approver", "approver2"), **fields: Any) -> int:
    with database.session() as session:
        resource = Resource(name=name, kind="database", approvals_required=required, **fields)
        session.add(resource)
        session.flush()
        for role in approvers:
            session.add(ResourceApprover(resource_id=resource.id, user_id=people[role].id))
        return resource.id  # type: ignore[return-value]


def make_agent(database: Database, kind: str, settings: dict[str, Any], name: str | None = None,
               **fields: Any) -> int:
    with database.session() as session:
        agent = Agent(name=name or f"{kind}-{uuid.uuid4().hex[:6]}", kind=kind, settings=settings, **fields)
        session.add(agent)
        session.flush()
        return agent.id  # type: ignore[return-value]


def submit(client: TestClient, resource_id: int, duration: str = "8h", *, key: str | None = None,
           reason: str = REASON) -> int:
    """Ask for access through the form, as a browser without JavaScript; the new request's id."""
    response = post_form(client, "/requests", {"resource_id": resource_id, "duration": duration, "reason": reason,
                                               "form_key": key or uuid.uuid4().hex})
    assert response.status_code == 303, response.text
    return int(response.headers["location"].rsplit("/", 1)[1])


def status_of(database: Database, request_id: int) -> str:
    with database.session() as session:
        return session.get(AccessRequest, request_id).status  # type: ignore[union-attr]
