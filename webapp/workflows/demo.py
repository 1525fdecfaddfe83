"""The live part of the demo: requests that wait for the demo approvers and grants that end
soon, each in its own request workflow, so a newcomer can decide and watch access end.

seed-demo writes finished history as rows (webapp.services.demo); a pending request or an
active time-bound grant, though, belongs to a workflow that waits for decisions or for the
end of the grant. So seed-demo launches DBOS, submits and decides these through the same
calls the pages use, and stops: the workflows stay PENDING under this executor id, and
`webapp serve` (the same EXECUTOR_ID, or worker 1 of several) recovers them at start.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass

import sqlalchemy as sa

from webapp import workflows
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Resource, User
from webapp.services.demo import email_for
from webapp.services.identity import principal_of
from webapp.workflows.access import decide, submit

# Time for the notifications these requests send to go out before the process stops (what is
# left is recovered by the server).
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class LiveRequest:
    requester: str
    resource: str
    duration: str
    reason: str
    approved_by: tuple[str, ...] = ()  # approvals given at once; fewer than required leaves it pending


# The first demo approver printed (Chiara Rossi) has three requests to decide; aws-production
# waits for its second approval; Jamal Carter (the first demo member) and Olga Petrova hold
# grants that end within hours.
LIVE_REQUESTS = [
    LiveRequest("Dana Levi", "github-engineering", "permanent",
                "Joined the payments squad; I need to push to the engineering repositories."),
    LiveRequest("Mei Chen", "aws-staging", "7d", "Reproducing the checkout timeout that only happens on staging."),
    LiveRequest("Kaja Nowak", "pagerduty-oncall", "7d", "Shadowing the on-call rotation next week before I join it."),
    LiveRequest("Pedro Alves", "aws-production", "8h", "Rotating the production TLS certificates tonight.",
                approved_by=("Björn Lindqvist",)),
    LiveRequest("Jamal Carter", "aws-staging", "8h", "Load-testing the new search service on staging.",
                approved_by=("Dmitri Volkov",)),
    LiveRequest("Olga Petrova", "aws-production", "1h", "Applying the database failover runbook with the SRE team.",
                approved_by=("Dmitri Volkov", "Ada Okafor")),
]


def start_live_demo(settings: Settings, database: Database) -> int:
    """Launch DBOS, start LIVE_REQUESTS (decided as listed), and stop; returns how many
    started. Run it once, right after the history is seeded."""
    workflows.start(settings, database)
    try:
        workflows.register(settings, database)
        return asyncio.run(_submit_all(settings, database))
    finally:
        workflows.stop(grace_seconds=0)


async def _submit_all(settings: Settings, database: Database) -> int:
    def people_and_resources() -> tuple[dict[str, User], dict[str, int]]:
        with database.session() as session:
            users = {u.email: u for u in session.scalars(sa.select(User))}
            session.expunge_all()
            return users, {name: id_ for name, id_ in session.execute(sa.select(Resource.name, Resource.id))}

    users, resources = await asyncio.to_thread(people_and_resources)

    def principal(name: str):  # type: ignore[no-untyped-def]
        return principal_of(users[email_for(name)])

    for live in LIVE_REQUESTS:
        submitted = await submit(database, settings, principal(live.requester), resource_id=resources[live.resource],
                                 duration=live.duration, reason=live.reason, form_key=uuid.uuid4().hex)
        for approver in live.approved_by:
            await decide(database, principal(approver), submitted.request_id, "approve",
                         comment="Looks right; go ahead.")
    await asyncio.sleep(SETTLE_SECONDS)
    return len(LIVE_REQUESTS)
