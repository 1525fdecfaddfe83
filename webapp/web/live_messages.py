"""What one viewer receives over SSE for one audit event.

For an event about a request the viewer may see:
  `row-{id}`   the request's table row as this viewer would get it from the server (with the
               buttons they may use); rows on the page listen to their own id and replace
               themselves, so a row that is not on the page costs the browser nothing
  `new-row`    the same row, for a new request: the unfiltered first page of the table
               listens to it and puts the row on top
  `queue-row`  the same again, to those who may decide it: the approvals queue adds it
  `toast`      a short message when the event concerns the viewer (their request was
               decided or expired, a request waits for their decision, their access ends)
  `tasks`      no HTML, just a nudge when tasks or agents may have moved: task lists, task and
               agent pages fetch themselves again (the assignees of a manual task, who may not
               see the request itself, get only this one)
  `pending`    no HTML: the requests waiting for this approver's decision may have changed (the
               count beside "Waiting for me" fetches itself again)
and for every event they may see, last, the one that carries the SSE id:
  `audit`      an entry of the activity list
Only the last message has an id, so a browser that reconnects halfway through an event gets
the whole of it again from Last-Event-ID. Everything is rendered from the event, which the
process loaded once for all its subscribers: no query per viewer. What a viewer gets depends
only on their audience (`audience_key`: their role, zone, and whether they asked, approve,
approved or did it), so the messages are rendered and encoded once per audience and event
(`encoded`, kept on the event) and written as one chunk; viewers of one audience differ only
in their CSRF token, put into the shared bytes by a replacement.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jinja2 import Environment
from sse_starlette import ServerSentEvent

from webapp.live.feed import FeedEvent
from webapp.services.audit import Action
from webapp.services.identity import Principal
from webapp.services.request_table import RowActions, actions_for

# Events after which the dashboard counters may have moved.
COUNTED = ("request.", "grant.")  # the prefixes of Action names
# Stands for the viewer's CSRF token in shared HTML (tokens are URL-safe: no escaping differs).
CSRF_SLOT = "__gatehouse_csrf_slot__"


@dataclass(frozen=True)
class Toast:
    kind: str  # ok, info or error: the colour and icon; the text says it all without them
    text: str
    url: str  # the request it is about


def row_actions(event: FeedEvent, principal: Principal) -> RowActions:
    assert event.row is not None
    return actions_for(principal, event.row, approves_resource=principal.id in event.approvers,
                       has_approved=principal.id in event.approved_by)


def toast_for(event: FeedEvent, principal: Principal) -> Toast | None:
    """The message for this viewer, if the event concerns them and they did not cause it."""
    row = event.row
    if row is None or event.actor_id == principal.id:
        return None
    mine = row.requester_id == principal.id
    label = f"Request #{row.id} for {row.resource}"
    said: tuple[str, str] | None = None
    if event.action == Action.REQUEST_SUBMITTED and principal.id in event.approvers and not mine:
        said = "info", f"New request #{row.id}: {row.requester} asks for {row.resource}."
    elif event.action == Action.REQUEST_CANCELED and principal.id in event.approvers and not mine:
        said = "info", f"{label} was withdrawn by {row.requester}."
    elif principal.is_admin and event.action in (Action.TASK_FAILED, Action.TASK_RETRYING):
        said = "error", (f"Access to {row.resource} for {row.requester} is held up: "
                         + ("a task needs a person (see Tasks)." if event.action == Action.TASK_FAILED
                            else "its system does not answer; the task keeps retrying."))
    elif mine:
        rejected = f"{label} was rejected" + (f": \u201c{row.decision_note}\u201d" if row.decision_note else ".")
        said = {
            Action.REQUEST_APPROVED: ("ok", f"{label} was approved."),
            Action.REQUEST_AUTO_APPROVED: ("ok", f"{label} was approved automatically."),
            Action.REQUEST_REJECTED: ("error", rejected),
            Action.REQUEST_EXPIRED: ("info", f"{label} expired without a decision."),
            Action.REQUEST_FAILED: ("error", f"{label} failed; the administrators can see why."),
            Action.GRANT_EXPIRING: ("info", f"Your access to {row.resource} ends within a day."),
            Action.GRANT_REVOKED: ("info", f"Your access to {row.resource} has ended."),
            Action.GRANT_ACTIVE: ("ok", f"Your access to {row.resource} is in place."),
        }.get(event.action)
    return None if said is None else Toast(*said, url=row.url)


def messages(env: Environment, tz: Any, event: FeedEvent, principal: Principal) -> list[ServerSentEvent]:
    """The SSE messages for one event and one viewer who may see it, id-bearing one last, with
    CSRF_SLOT where the viewer's CSRF token goes (`encoded` puts it there). Times are shown in
    the viewer's zone `tz`: one rendering per zone."""
    out: list[ServerSentEvent] = []
    if event.row is not None:
        actions = row_actions(event, principal)
        row_html = _shared(env, event, ("row", actions, tz), "row", row=event.row.for_viewer(actions), viewer_tz=tz)
        out.append(ServerSentEvent(data=row_html, event=f"row-{event.row.id}"))
        if event.action == Action.REQUEST_SUBMITTED:
            out.append(ServerSentEvent(data=row_html, event="new-row"))
            if actions.approve:  # it waits for this viewer: the approvals queue adds it
                out.append(ServerSentEvent(data=row_html, event="queue-row"))
        toast = toast_for(event, principal)
        if toast is not None:
            out.append(ServerSentEvent(data=_shared(env, event, toast, "toast", toast=toast), event="toast"))
    if event.moves_queue and principal.has_role("approver") and (principal.is_admin or principal.id in event.approvers):
        out.append(ServerSentEvent(data=event.action, event="pending"))
    if event.moves_tasks:
        out.append(tasks_nudge(event))
    out.append(ServerSentEvent(data=_shared(env, event, ("activity", tz), "activity", viewer_tz=tz), event="audit",
                               id=str(event.id)))
    return out


def audience_key(event: FeedEvent, principal: Principal, tz: Any) -> tuple[Any, ...]:
    """Everything about a viewer that `messages` reads: viewers with the same key get the same
    messages (but for their CSRF token)."""
    return (principal.role, principal.service, tz, event.row is not None and principal.id == event.row.requester_id,
            principal.id in event.approvers, principal.id in event.approved_by, principal.id == event.actor_id)


CSRF_SLOT_BYTES = CSRF_SLOT.encode()


def encoded(env: Environment, context: dict[str, Any], event: FeedEvent, principal: Principal) -> bytes:
    """`messages`, encoded as one chunk of the stream: rendered and encoded once per audience."""
    tz = context.get("viewer_tz")
    key = ("encoded", audience_key(event, principal, tz))
    chunk = event.rendered.get(key)
    if chunk is None:
        shared = messages(env, tz, event, principal)
        chunk = event.rendered[key] = b"".join(message.encode() for message in shared)
    if CSRF_SLOT_BYTES in chunk:
        return chunk.replace(CSRF_SLOT_BYTES, context.get("csrf_token", "").encode())
    return chunk


def tasks_nudge(event: FeedEvent) -> ServerSentEvent:
    return ServerSentEvent(data=event.action, event="tasks")


def _shared(env: Environment, event: FeedEvent, key: Any, block: str, **values: Any) -> str:
    """`block` of _live_event.html for this event, rendered once per distinct `key`."""
    html = event.rendered.get(key)
    if html is None:
        template = env.get_template("_live_event.html")
        context = template.new_context({"event": event, "csrf_token": CSRF_SLOT, **values})
        html = event.rendered[key] = "".join(template.blocks[block](context)).strip()
    return html
