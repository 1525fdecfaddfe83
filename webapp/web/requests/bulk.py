"""Deciding several requests at once from the approvals queue.

Each decision takes the same path as one made on its own (the request's workflow decides,
with the same rules and audit), a few at a time; the answer says what happened to each.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.errors import Refusal
from webapp.core.forms import parse_form
from webapp.services.identity import Principal
from webapp.web.flash import redirect_with
from webapp.web.rendering import wants_json
from webapp.web.requests.forms import BulkDecisionForm
from webapp.web.security import current_principal
from webapp.workflows import access as access_workflow

AT_ONCE = 8  # decisions in flight together: each waits for its workflow's answer


@dataclass(frozen=True)
class BulkResult:
    id: int
    applied: bool
    status: str | None  # the request's status afterwards; None when it could not be read
    note: str  # why nothing changed, when nothing did


async def _decide_each(request: Request, principal: Principal, form: BulkDecisionForm) -> list[BulkResult]:
    database = request.app.state.db
    gate = asyncio.Semaphore(AT_ONCE)

    async def one(request_id: int) -> BulkResult:
        async with gate:
            try:
                outcome = await access_workflow.decide(database, principal, request_id, form.decision, form.comment)
            except Refusal as refused:  # not visible, not theirs, decided already, not answered yet
                return BulkResult(request_id, False, None, str(refused))
            return BulkResult(request_id, True, outcome["status"], "")

    return list(await asyncio.gather(*(one(i) for i in form.ids)))


def summary(decision: str, results: list[BulkResult]) -> str:
    """One sentence per outcome: "Approved #4, #5. Not changed: #7 (Nothing changed: ...)."."""
    done = [f"#{r.id}" for r in results if r.applied]
    verb = "Approved" if decision == "approve" else "Rejected"
    parts = [f"{verb} {', '.join(done)}." if done else f"{verb} none of them."]
    skipped = [f"#{r.id} ({r.note.rstrip('.')})" for r in results if not r.applied]
    if skipped:
        parts.append(f"Not changed: {'; '.join(skipped)}.")
    return " ".join(parts)


async def decide_selected(request: Request) -> Response:
    """Approve or reject every selected request; back to the queue with what happened to each."""
    principal = current_principal(request)
    form = parse_form(BulkDecisionForm, {**(raw := await request.form()), "ids": raw.getlist("ids")})
    results = await _decide_each(request, principal, form)
    if wants_json(request):
        return JSONResponse({"results": [asdict(r) for r in results]})
    return redirect_with(request, "/approvals", summary(form.decision, results),
                         "ok" if all(r.applied for r in results) else "warning")
