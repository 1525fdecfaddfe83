"""Takeover: the workflows of an executor that died for good finish on the live ones.

DBOS recovers a crashed executor's workflows when a process with the same executor id
starts again; a process that never comes back would strand them (requests waiting for
decisions, deliveries, grants due to end). So every serving process, after each
heartbeat, looks for executors whose last beat is older than EXECUTOR_LEASE_SECONDS and
hands their PENDING workflows back to the queues, where one live process dequeues each
(DBOS moves a workflow only while it is still PENDING under the dead executor, so two
processes adopting at once never both take one). Each adoption is audited
(`executor.adopted`, by the adopter, naming the workflows) and shown on /ops/executors,
where an operator may also adopt at once. A process that was only paused past its lease
and then resumes finds itself adopted at its next beat and exits (webapp.workflows.heartbeat),
so its workflows never run in two places; a process restarted under the old id finds
nothing of its own to recover.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from webapp.core.db import Database
from webapp.core.models import utcnow
from webapp.services.audit import Action, record_event
from webapp.services.executors import lease_expired, record_adoption
from webapp.workflows import runtime

log = logging.getLogger(__name__)
QUEUE = "adopted"  # where adopted workflows that had no queue wait; only serving processes dequeue it
LISTED_IDS = 50  # workflow ids named in the audit event


@dataclass(frozen=True)
class Adoption:
    executor_id: str
    workflow_ids: list[str]


def adopt(database: Database, dead: str, *, by: str, actor: str, actor_id: int | None = None,
          reason: str = "lease expired") -> Adoption:
    """Hand `dead`'s pending workflows to the live executors and record it (audited only
    when this call moved some). Blocking."""
    moved = runtime.reenqueue_pending(dead, QUEUE)
    with database.session() as session:
        record_adoption(session, dead, by=by, count=len(moved), now=utcnow())
        if moved:
            record_event(session, actor=actor, actor_id=actor_id, action=Action.EXECUTOR_ADOPTED,
                         subject=f"executor:{dead}",
                         details={"by": by, "workflows": len(moved), "reason": reason,
                                  "workflow_ids": moved[:LISTED_IDS]})
    if moved:
        log.warning("adopted %s workflows of executor %s (%s)", len(moved), dead, reason,
                    extra={"executor_id": by})
    return Adoption(dead, moved)


def adopt_expired(database: Database, *, me: str, lease_seconds: float) -> list[Adoption]:
    """Adopt every executor whose lease ran out. Blocking; run after each heartbeat."""
    with database.session() as session:
        dead = lease_expired(session, me=me, now=utcnow(), lease_seconds=lease_seconds)
    return [adopt(database, executor, by=me, actor=me) for executor in dead]
