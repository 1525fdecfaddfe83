"""The sweep: a DBOS schedule (every SWEEP_INTERVAL_SECONDS, once across all processes).

- A request's own workflow expires it when its pending TTL passes. The sweep catches the
  requests no workflow is waiting for any more (the workflow was cancelled from the ops
  console, failed, or was never started because the row was written by hand or by an
  older version) and expires those. A workflow that is still PENDING or ENQUEUED is left
  alone, even if its process is down: recovery will let it expire the request itself.
- It announces each active grant once as it enters its last day (grants.EXPIRING_WINDOW,
  `grant.expiring`): the holder gets a reminder toast and every dashboard's "expiring
  soon" counter moves, though no row changed. Grants that were shorter than the window
  to begin with are not announced: they were "ending soon" from the start (and the
  request's workflow sends its own reminder before the end).

- It ends the grants of people who were deactivated, each through revoke_grant_workflow
  (so their agents remove the access): deactivating commits at once, and the next tick,
  in this process or another after a crash, carries it out.

All write audit events, so they reach browsers through the same live feed as every
other change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dbos import DBOS, SetWorkflowID

from webapp.services import access_changes, grants
from webapp.services.access import AccessError, RevokeTarget, check_revoke
from webapp.services.access_changes import Overdue
from webapp.workflows.access import revoke_grant_workflow, revoke_workflow_id
from webapp.workflows.datasource import datasource

WAITING = {"PENDING", "ENQUEUED"}
# A workflow expires its own request as its TTL ends; look only at requests overdue by more.
GRACE = timedelta(seconds=30)
BATCH = 500


def schedule(interval_seconds: int) -> str:
    """Cron with a seconds field: every `interval_seconds` seconds (a divisor of 60 is exact)."""
    return f"*/{interval_seconds} * * * * *"


@datasource.transaction()
def overdue_requests(before: str) -> list[Overdue]:
    """Pending requests whose TTL ended before `before` (ISO time), oldest first."""
    return access_changes.overdue_requests(datasource.session(), datetime.fromisoformat(before), limit=BATCH)


def waiting_workflows(workflow_ids: list[str]) -> list[str]:
    """Those of `workflow_ids` that DBOS still runs or will run."""
    found = DBOS.list_workflows(workflow_ids=workflow_ids, load_input=False, load_output=False)
    return [w.workflow_id for w in found if w.status in WAITING]


@datasource.transaction()
def expire_orphan(request_id: int) -> bool:
    return access_changes.expire_orphan(datasource.session(), request_id)


@datasource.transaction()
def announce_expiring(now: str) -> int:
    return grants.announce_expiring(datasource.session(), datetime.fromisoformat(now), settled=GRACE, limit=BATCH)


@datasource.transaction()
def grants_to_end() -> list[tuple[int, RevokeTarget]]:
    """The grants of deactivated people, with what revoking each needs."""
    found = []
    for grant_id in grants.held_by_inactive(datasource.session(), limit=BATCH):
        try:
            found.append((grant_id, check_revoke(datasource.session(), grant_id)))
        except AccessError:  # ended meanwhile
            continue
    return found


def _end_grants_of_deactivated() -> int:
    ending = grants_to_end()
    for grant_id, target in ending:
        with SetWorkflowID(revoke_workflow_id(grant_id)):  # an early revoke under way is joined, not repeated
            DBOS.start_workflow(revoke_grant_workflow, grant_id, None, "", target["access_workflow_id"],
                                target["facts"], None, "person deactivated")
    return len(ending)


@DBOS.workflow()
def sweep_workflow(scheduled_at: datetime, context: Any) -> dict[str, int]:
    """One tick: expire the overdue requests whose workflow is gone; announce grants that
    are about to end; end the grants of deactivated people."""
    moment = scheduled_at if scheduled_at.tzinfo else scheduled_at.replace(tzinfo=UTC)
    announced = announce_expiring(moment.isoformat())
    deactivated = _end_grants_of_deactivated()
    overdue = overdue_requests((moment - GRACE).isoformat())
    if not overdue:
        return {"overdue": 0, "expired": 0, "announced": announced, "deactivated": deactivated}
    waiting = set(DBOS.run_step({"name": "sweep.waiting_workflows"}, waiting_workflows,
                                [r["workflow_id"] for r in overdue]))
    expired = sum(1 for r in overdue if r["workflow_id"] not in waiting and expire_orphan(r["id"]))
    return {"overdue": len(overdue), "expired": expired, "announced": announced, "deactivated": deactivated}
