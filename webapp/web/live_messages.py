"""What one viewer receives over SSE for one audit event.

For an event about a request the viewer may see:
  `row-{id}`   the request's table row as this viewer would get it from the server (with the
               buttons they may use); rows on the page listen to their own id and replace
               themselves, so a row that is not on the page costs the browser nothing
  `new-row`    the same row, for a new request: the unfiltered first page of the table
               listens to it and puts the row on top
  `toast`      a short message when the event concerns the viewer (their request was
               decided or expired, a request waits for their decision, their access ends)
and for every event they may see, last, the one that carries the SSE id:
  `audit`      an entry of the activity list
Only the last message has an id, so a browser that reconnects halfway through an event gets
the whole of it again from Last-Event-ID. Everything is rendered from the event, which the
process loaded once for all its subscribers: no query per viewer. And each distinct piece of
HTML is rendered once per event (kept on the event): viewers differ only in the buttons they
get and in their CSRF token, which is put into the shared HTML by a string replacement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from sse_starlette import ServerSentEvent

from webapp.services.access import decides, may_cancel
from webapp.services.identity import Principal
from webapp.live.feed import FeedEvent
from webapp.core.models import RequestStatus
from webapp.services.request_table import RowActions

# Events after which the dashboard counters may have moved.
COUNTED = ("request.", "grant.")
# Stands for the viewer's CSRF token in shared HTML (tokens are URL-safe: no escaping differs).
CSRF_SLOT = "__gatehouse_csrf_slot__"


@dataclass(frozen=True)
class Toast:
    kind: str  # ok, info or error: the colour; the text says it all without it
    text: str


def row_actions(event: FeedEvent, principal: Principal) -> RowActions:
    row = event.row
    assert row is not None
    pending = row.status == RequestStatus.requested
    return RowActions(
        decide=pending and principal.id not in event.approved_by
        and decides(principal, requester_id=row.requester_id, approves_resource=principal.id in event.approvers),
        cancel=may_cancel(principal, requester_id=row.requester_id, status=row.status),
    )


def toast_for(event: FeedEvent, principal: Principal) -> Toast | None:
    """The message for this viewer, if the event concerns them and they did not cause it."""
    row = event.row
    if row is None or event.actor_id == principal.id:
        return None
    mine = row.requester_id == principal.id
    label = f"Request #{row.id} for {row.resource}"
    if event.action == "request.submitted" and principal.id in event.approvers and not mine:
        return Toast("info", f"New request #{row.id}: {row.requester} asks for {row.resource}.")
    if event.action == "request.canceled" and principal.id in event.approvers and not mine:
        return Toast("info", f"{label} was withdrawn by {row.requester}.")
    if not mine:
        return None
    return {
        "request.approved": Toast("ok", f"{label} was approved."),
        "request.auto_approved": Toast("ok", f"{label} was approved automatically."),
        "request.rejected": Toast("error", f"{label} was rejected."),
        "request.expired": Toast("info", f"{label} expired without a decision."),
        "request.failed": Toast("error", f"{label} failed; the administrators can see why."),
        "grant.expiring": Toast("info", f"Your access to {row.resource} ends within a day."),
        "grant.revoked": Toast("info", f"Your access to {row.resource} has ended."),
    }.get(event.action)


def messages(env: Environment, context: dict[str, Any], event: FeedEvent, principal: Principal) -> list[ServerSentEvent]:
    """The SSE messages for one event and one viewer who may see it, id-bearing one last."""
    out: list[ServerSentEvent] = []
    if event.row is not None:
        actions = row_actions(event, principal)
        row_html = _shared(env, event, ("row", actions), "row", actions=actions)
        row_html = row_html.replace(CSRF_SLOT, context.get("csrf_token", ""))
        out.append(ServerSentEvent(data=row_html, event=f"row-{event.row.id}"))
        if event.action == "request.submitted":
            out.append(ServerSentEvent(data=row_html, event="new-row"))
        toast = toast_for(event, principal)
        if toast is not None:
            out.append(ServerSentEvent(data=_shared(env, event, toast, "toast", toast=toast), event="toast"))
    out.append(ServerSentEvent(data=_shared(env, event, "activity", "activity"), event="audit", id=str(event.id)))
    return out


def _shared(env: Environment, event: FeedEvent, key: Any, block: str, **values: Any) -> str:
    """`block` of _live_event.html for this event, rendered once per distinct `key`."""
    html = event.rendered.get(key)
    if html is None:
        template = env.get_template("_live_event.html")
        context = template.new_context({"event": event, "csrf_token": CSRF_SLOT, **values})
        html = event.rendered[key] = "".join(template.blocks[block](context)).strip()
    return html
