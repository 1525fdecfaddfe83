"""Drift checks: a DBOS schedule per agent ("drift-agent-<id>", every DRIFT interval of the
agent) and a "check now" from its page, both running one check:

    1. plan         transaction: the agent's resources and the holders of their active grants
    2. per resource observe (step): the target's members, and the holders' names there
                    replan (transaction): the grants again; whoever's grant changed during the
                    read is in flux (named by one more lookup), neither extra nor missing
                    correct (step, policy "correct" only): remove the extra, add the missing
                    record (transaction): the findings, replacing the last check's, audited
    3. finish       transaction: when, how much drift stands, the agent's health
    4. announce     the admins hear of drift found or corrected (outbox, Slack, email)
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Any, TypedDict

from dbos import DBOS

from webapp.agents import agent_for
from webapp.agents.base import AgentError, Person
from webapp.core.background import in_thread
from webapp.services import drift
from webapp.services.drift import DriftPlan, Finding, Holder, ResourcePlan
from webapp.services.notifications import Message
from webapp.services.tasks import admins
from webapp.workflows.datasource import datasource
from webapp.workflows.notifications import OUTBOX, send_notifications
from webapp.workflows.runtime import start_workflow

log = logging.getLogger(__name__)


class Observed(TypedDict):
    members: list[str]
    names: dict[str, str]
    error: str | None


def schedule_name(agent_id: int) -> str:
    return f"drift-agent-{agent_id}"


def cron(agent_id: int, interval_seconds: int) -> str:
    """A cron (with seconds) for checking every `interval_seconds`, spread by agent over the hour."""
    minutes = max(1, interval_seconds // 60)
    if minutes < 60:
        return f"{agent_id % 60} */{minutes} * * * *"
    hours = minutes // 60
    return f"0 {agent_id % 60} */{hours} * * *" if hours < 24 else f"0 {agent_id % 60} 3 * * *"


def apply_schedules(agents: Iterable[tuple[int, str, int]]) -> None:
    """Create or update the schedules of these agents, given as (id, kind, drift interval in
    seconds); kinds that cannot list members have none. Blocking: call it in a worker thread."""
    specs = [{"schedule_name": schedule_name(agent_id), "workflow_fn": drift_workflow,
              "schedule": cron(agent_id, interval), "context": agent_id}
             for agent_id, kind, interval in agents if kind in drift.KINDS_WITH_MEMBERS]
    if specs:
        DBOS.apply_schedules(specs)  # type: ignore[arg-type]


# Steps -----------------------------------------------------------------------------------------

@datasource.transaction()
def make_plan(agent_id: int) -> DriftPlan | None:
    return drift.plan(datasource.session(), agent_id)


@datasource.transaction()
def replan(resource: ResourcePlan) -> ResourcePlan:
    return drift.replan(datasource.session(), resource)


@DBOS.step()
def observe(kind: str, settings: dict[str, Any], resource: ResourcePlan) -> Observed:
    """Read the target: its members, and how it names the holders (one bulk lookup)."""
    try:
        agent = agent_for(kind, settings)
        members = agent.members(resource["target"])
        names = agent.names_for([Person(h["email"], h["name"]) for h in resource["holders"] + resource["in_flux"]])
    except AgentError as exc:
        return Observed(members=[], names={}, error=f"{resource['name']}: {exc}")
    return Observed(members=sorted(members), names=names, error=None)


@DBOS.step()
def names_of(kind: str, settings: dict[str, Any], people: list[Holder]) -> Observed:
    """How the target names people whose grant changed while it was read, so that none of
    them is taken for a member without a grant."""
    try:
        return Observed(members=[], names=agent_for(kind, settings).names_for(
            [Person(h["email"], h["name"]) for h in people]), error=None)
    except AgentError as exc:
        return Observed(members=[], names={}, error=str(exc))


@DBOS.step()
def correct(kind: str, settings: dict[str, Any], resource: ResourcePlan, findings: list[Finding]) -> list[Finding]:
    """Remove the extra members and add the missing ones; the findings that were corrected."""
    agent = agent_for(kind, settings)
    people = {h["user_id"]: Person(h["email"], h["name"]) for h in resource["holders"]}
    done = []
    for finding in findings:
        try:
            if finding["kind"] == "extra":
                agent.remove_member(resource["target"], finding["member"])
            elif finding["user_id"] in people:
                agent.add(people[finding["user_id"]], resource["target"])
            done.append(finding)
        except AgentError as exc:
            log.warning("drift correction on %s failed for %s: %s", resource["name"], finding["member"], exc)
    return done


@datasource.transaction()
def record(agent_id: int, resource_id: int, findings: list[Finding], corrected: list[Finding], check: str) -> None:
    drift.record(datasource.session(), agent_id, resource_id, findings, corrected, check=check)


@datasource.transaction()
def finish(agent_id: int, errors: list[str]) -> int:
    return drift.finish(datasource.session(), agent_id, errors=errors)


@datasource.transaction()
def admin_emails() -> list[str]:
    return [u.email for u in admins(datasource.session())]


# Workflows -------------------------------------------------------------------------------------

@DBOS.workflow()
def drift_workflow(scheduled_at: datetime, agent_id: int) -> dict[str, Any]:
    return check(agent_id)


@DBOS.workflow()
def drift_now_workflow(agent_id: int) -> dict[str, Any]:
    return check(agent_id)


def check(agent_id: int) -> dict[str, Any]:
    """One check of every resource of the agent; what it found."""
    the_plan = make_plan(agent_id)
    if the_plan is None:
        return {"checked": 0, "found": 0, "corrected": 0, "errors": ["This agent's kind has no members to check."]}
    check_id = DBOS.workflow_id or ""
    errors: list[str] = []
    found = fixed = 0
    lines = []
    for resource in the_plan["resources"]:
        seen = observe(the_plan["kind"], the_plan["settings"], resource)
        if seen["error"]:
            errors.append(seen["error"])
            continue
        resource = replan(resource)  # grants that changed while the target was read are in flux
        names = dict(seen["names"])
        unnamed = [h for h in resource["in_flux"] if h["email"] not in names]
        if unnamed:
            named = names_of(the_plan["kind"], the_plan["settings"], unnamed)
            if named["error"]:
                errors.append(f"{resource['name']}: {named['error']}")
                continue
            names.update(named["names"])
        in_flux = {names[h["email"]] for h in resource["in_flux"] if h["email"] in names}
        findings = drift.compare(resource["holders"], names, set(seen["members"]), in_flux)
        corrected = (correct(the_plan["kind"], the_plan["settings"], resource, findings)
                     if findings and drift.correcting(resource["policy"]) else [])
        record(agent_id, resource["resource_id"], findings, corrected, check_id)
        found, fixed = found + len(findings), fixed + len(corrected)
        if findings:
            lines.append(_describe(resource, findings, corrected))
    standing = finish(agent_id, errors)
    if lines:
        _announce(the_plan, lines)
    return {"checked": len(the_plan["resources"]), "found": found, "corrected": fixed, "standing": standing,
            "errors": errors}


def _describe(resource: ResourcePlan, findings: list[Finding], corrected: list[Finding]) -> str:
    extra = [f["member"] for f in findings if f["kind"] == "extra"]
    missing = [f["member"] for f in findings if f["kind"] == "missing"]
    text = f"{resource['name']} ({resource['target']}):"
    if extra:
        text += f" members without a grant: {', '.join(extra)}."
    if missing:
        text += f" grants without a membership: {', '.join(missing)}."
    if corrected:
        text += f" Corrected {len(corrected)} of {len(findings)}."
    return text


def _announce(the_plan: DriftPlan, lines: list[str]) -> None:
    link = f"{OUTBOX.settings.base_url.rstrip('/')}/admin/agents/{the_plan['agent_id']}"
    subject = f"Drift in {the_plan['agent']}"
    body = "The last drift check found:\n\n" + "\n".join(f"- {line}" for line in lines)
    event = f"drift.{DBOS.workflow_id}"
    send_notifications([Message(request_id=None, event=event, recipient=email, subject=subject, body=body, link=link)
                        for email in admin_emails()])


async def check_now(agent_id: int) -> dict[str, Any]:
    """Run a check at once (from the agent's page) and return what it found."""
    handle = await start_workflow(f"drift-{agent_id}-now-{uuid.uuid4().hex[:12]}", drift_now_workflow, agent_id)
    return await in_thread(handle.get_result)  # type: ignore[no-any-return]
