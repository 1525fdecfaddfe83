"""A request's story, from its audit events: submitted, each decision (who, how, why), the
grant, its provisioning and its end, in words, with the reasons and the ids they link to, and
the channel each decision came through (the web, the API with which token, Slack, or an
emailed link).

Built from rows the request page reads anyway; an action this module does not know is shown
as it is stored, so nothing in the log is ever left out of the story.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from webapp.core.models import AuditEvent


@dataclass(frozen=True)
class Moment:
    at: datetime
    kind: str  # request, decision, grant, task or problem: the icon and colour
    title: str
    detail: str = ""  # a reason, a comment, an error
    link: tuple[str, str] | None = None  # (path, text)
    channel: str = ""  # how a person did it: "web", "API (token #3)", "Slack"; empty when Gatehouse did


CHANNELS = {"web": "web", "slack": "Slack", "email": "an emailed link"}


def _channel(event: AuditEvent) -> str:
    if event.token_id is not None:
        return f"API (token #{event.token_id})"
    return CHANNELS.get(event.channel or "", "")


def _who(event: AuditEvent) -> str:
    return "Gatehouse" if event.actor in ("workflow", "sweep", "system", "") else event.actor


def _count(d: dict[str, Any]) -> str:
    return f" ({d['approvals']} of {d['required']})" if d.get("required", 1) > 1 and "approvals" in d else ""


def _grant_ends(d: dict[str, Any]) -> str:
    return f"until {d['expires_at'][:16].replace('T', ' ')} UTC" if d.get("expires_at") else "permanently"


def _task(title: str) -> Callable[[AuditEvent, dict[str, Any]], tuple[str, str, str, tuple[str, str] | None]]:
    def told(event: AuditEvent, d: dict[str, Any]) -> tuple[str, str, str, tuple[str, str] | None]:
        task_id = event.subject.removeprefix("task:")
        kind = "problem" if event.action in ("task.failed", "task.retrying") else "task"
        return kind, title, str(d.get("error") or d.get("note") or d.get("reason") or ""), \
            (f"/tasks/{task_id}", f"Task #{task_id}")
    return told


Told = tuple[str, str, str, "tuple[str, str] | None"]
STORY: dict[str, Callable[[AuditEvent, dict[str, Any]], Told]] = {
    "request.submitted": lambda e, d: ("request", f"{_who(e)} asked for {d.get('resource', 'access')}"
                                       + (f" for {d['duration']}" if d.get("duration") else ""),
                                       str(d.get("reason", "")), None),
    "request.approval_recorded": lambda e, d: ("decision", f"{_who(e)} approved{_count(d)}; more are needed",
                                               str(d.get("comment", "")), None),
    "request.approved": lambda e, d: ("decision", f"{_who(e)} approved{_count(d)}", str(d.get("comment", "")), None),
    "request.auto_approved": lambda e, d: ("decision", "Approved automatically (the resource allows it)", "", None),
    "request.rejected": lambda e, d: ("problem", f"{_who(e)} rejected", str(d.get("comment", "")), None),
    "request.canceled": lambda e, d: ("request", f"{_who(e)} cancelled the request", "", None),
    "request.expired": lambda e, d: ("problem", "Expired: nobody decided in time", "", None),
    "request.failed": lambda e, d: ("problem", "Failed", str(d.get("error_type", "")), None),
    "decision.ignored": lambda e, d: ("problem", f"{_who(e)}'s {d.get('kind', 'decision')} changed nothing",
                                      str(d.get("why", "")), None),
    "grant.created": lambda e, d: ("grant", f"Access granted {_grant_ends(d)}", "", None),
    "grant.extended": lambda e, d: ("grant", f"Extended: now ends {str(d.get('to', ''))[:16].replace('T', ' ')} UTC",
                                    "", (f"/requests/{d['request']}", f"Extension: request #{d['request']}")
                                    if d.get("request") else None),
    "grant.active": lambda e, d: ("grant", "In place in the target system"
                                  + (f" ({d['target']})" if d.get("target") else ""), "", None),
    "grant.expiring": lambda e, d: ("grant", "Reminder: the access ends within a day", "", None),
    "grant.revoked": lambda e, d: ("grant", "Ended at its time" if d.get("reason") == "expired"
                                   else f"Revoked by {_who(e)}" if e.actor_id else f"Ended ({d.get('reason', '')})",
                                   str(d.get("note", "")), None),
    "grant.removed": lambda e, d: ("grant", "Removed from the target system", "", None),
    "task.done": _task("A person did the task"),
    "task.failed": _task("The task failed: it needs a person"),
    "task.retrying": _task("The target system does not answer; retrying"),
    "task.retried": _task("The task is being tried again"),
    "task.cancelled": _task("The task was cancelled"),
}


def story(events: list[AuditEvent]) -> list[Moment]:
    """The moments of a request, oldest first."""
    moments = []
    for event in events:
        details = event.details or {}
        tell = STORY.get(event.action)
        if tell is None:
            kind, title, detail, link = "request", f"{event.action} ({_who(event)})", "", None
        else:
            kind, title, detail, link = tell(event, details)
        moments.append(Moment(event.at, kind, title, detail, link, _channel(event)))
    return moments
