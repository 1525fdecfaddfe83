"""The sweep: a DBOS schedule (every SWEEP_INTERVAL_SECONDS, once across all processes).

- A request's own workflow expires it when its pending TTL passes. The sweep catches the
  requests no workflow is waiting for any more (the workflow was cancelled from the ops
  console, failed, or was never started because the row was written by hand or by an
  older version) and expires those. A workflow that is still PENDING or ENQUEUED is left
  alone, even if its process is down: recovery will let it expire the request itself.
- It announces each active grant once as it enters its last EXPIRING_WINDOW
  (`grant.expiring`): the holder gets a reminder toast and every dashboard's "expiring
  soon" counter moves, though no row changed. Grants that were shorter than the window
  to begin with are not announced: they were "ending soon" from the start (and the
  request's workflow sends its own reminder before the end).

Both write audit events, so they reach browsers through the same live feed as every
other change.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from dbos import DBOS

from webapp.services.audit import record_event
from webapp.core.db import datasource
from webapp.core.models import AccessRequest, AuditEvent, Grant, RequestStatus, utcnow

WAITING = {"PENDING", "ENQUEUED"}
# A workflow expires its own request as its TTL ends; look only at requests overdue by more.
GRACE = timedelta(seconds=30)
BATCH = 500
EXPIRING_WINDOW = timedelta(hours=24)  # the dashboard's "expiring soon" (webapp.services.overview.SOON)
EXPIRING_ACTION = "grant.expiring"


def schedule(interval_seconds: int) -> str:
    """Cron with a seconds field: every `interval_seconds` seconds (a divisor of 60 is exact)."""
    return f"*/{interval_seconds} * * * * *"


@datasource.transaction()
def overdue_requests(before: str) -> list[dict[str, Any]]:
    """Pending requests whose TTL ended before `before` (ISO time), oldest first."""
    session = datasource.session()
    rows = session.execute(
        sa.select(AccessRequest.id, AccessRequest.workflow_id)
        .where(AccessRequest.status == RequestStatus.requested,
               AccessRequest.pending_until < datetime.fromisoformat(before))  # type: ignore[operator]
        .order_by(AccessRequest.pending_until).limit(BATCH)
    ).all()
    return [{"id": row.id, "workflow_id": row.workflow_id} for row in rows]


def waiting_workflows(workflow_ids: list[str]) -> list[str]:
    """Those of `workflow_ids` that DBOS still runs or will run."""
    found = DBOS.list_workflows(workflow_ids=workflow_ids, load_input=False, load_output=False)
    return [w.workflow_id for w in found if w.status in WAITING]


@datasource.transaction()
def expire_orphan(request_id: int) -> bool:
    """Expire one request nobody waits for (a no-op if it was decided meanwhile)."""
    session = datasource.session()
    request = session.get(AccessRequest, request_id, with_for_update=True)
    if request is None or request.status != RequestStatus.requested:
        return False
    now = utcnow()
    request.status, request.updated_at, request.decided_at = RequestStatus.expired, now, now
    record_event(session, actor="sweep", action="request.expired", subject=f"request:{request_id}",
                 details={"reason": "pending TTL passed with no workflow waiting"})
    return True


@datasource.transaction()
def announce_expiring(now: str) -> int:
    """One `grant.expiring` audit event per active grant that ends within EXPIRING_WINDOW
    of `now` and has not been announced yet."""
    session = datasource.session()
    moment = datetime.fromisoformat(now)
    announced = sa.select(AuditEvent.id).where(
        AuditEvent.action == EXPIRING_ACTION,
        AuditEvent.subject == sa.literal("grant:", sa.String) + sa.cast(Grant.id, sa.String))
    grants = session.execute(
        sa.select(Grant.id, Grant.granted_at, Grant.expires_at, Grant.user_id)
        .where(Grant.revoked_at.is_(None), Grant.expires_at > moment,  # type: ignore[union-attr, operator]
               Grant.expires_at <= moment + EXPIRING_WINDOW,  # type: ignore[operator]
               Grant.granted_at < moment - GRACE, ~announced.exists())  # type: ignore[operator]
        .order_by(Grant.expires_at).limit(BATCH)
    ).all()
    long_ones = [g for g in grants if g.expires_at - g.granted_at > EXPIRING_WINDOW]
    for grant_id, _granted_at, expires_at, user_id in long_ones:
        record_event(session, actor="sweep", action=EXPIRING_ACTION, subject=f"grant:{grant_id}",
                     details={"expires_at": expires_at.isoformat(), "user_id": user_id})
    return len(long_ones)


@DBOS.workflow()
def sweep_workflow(scheduled_at: datetime, context: Any) -> dict[str, int]:
    """One tick: expire the overdue requests whose workflow is gone; announce grants that
    are about to end."""
    moment = scheduled_at if scheduled_at.tzinfo else scheduled_at.replace(tzinfo=UTC)
    announced = announce_expiring(moment.isoformat())
    overdue = overdue_requests((moment - GRACE).isoformat())
    if not overdue:
        return {"overdue": 0, "expired": 0, "announced": announced}
    waiting = set(DBOS.run_step({"name": "sweep.waiting_workflows"}, waiting_workflows,
                                [r["workflow_id"] for r in overdue]))
    expired = sum(1 for r in overdue if r["workflow_id"] not in waiting and expire_orphan(r["id"]))
    return {"overdue": len(overdue), "expired": expired, "announced": announced}
