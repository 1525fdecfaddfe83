"""The live feed: audit rows reach SSE clients once, in order, only where the viewer may
see them; a reconnect with Last-Event-ID replays exactly what was missed."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.sse_client import Event, read_stream
from support.web import sign_in
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    Agent,
    AuditEvent,
    FulfilmentTask,
    Grant,
    Resource,
    ResourceApprover,
    utcnow,
)
from webapp.live.feed import AuditFeed, load_events
from webapp.services.access import viewer
from webapp.services.audit import record_event
from webapp.services.identity import Principal
from webapp.web.csrf import unmask


def read_events(client: TestClient, count: int, headers: dict[str, str] | None = None,
                timeout: float = 10.0) -> list[tuple[int, str]]:
    """The first `count` audit events (id, data) from /events; fails rather than hangs."""
    found = read_stream(client, "/events", headers=headers, timeout=timeout,
                        until=lambda events: sum(e.id is not None for e in events) >= count)
    return [(int(e.id), e.text) for e in found if e.id is not None]


def read_messages(client: TestClient, after: int, audit_events: int) -> list[Event]:
    """Every message (rows, toasts, audit entries) of the first `audit_events` events after `after`."""
    return read_stream(client, "/events", headers={"Last-Event-ID": str(after)},
                       until=lambda events: sum(e.id is not None for e in events) >= audit_events)


@pytest.fixture
def request_of(database: Database, people) -> Iterator[dict[str, int]]:  # type: ignore[no-untyped-def]
    """Two requests: one by the member (approved by approver), one by approver2 on another resource."""
    with database.session() as session:
        mine, other = Resource(name="live-a"), Resource(name="live-b")
        session.add_all([mine, other])
        session.flush()
        session.add(ResourceApprover(resource_id=mine.id, user_id=people["approver"].id))
        a = AccessRequest(requester_id=people["member"].id, resource_id=mine.id, reason="r" * 12, workflow_id="live-1")
        b = AccessRequest(requester_id=people["approver2"].id, resource_id=other.id, reason="r" * 12, workflow_id="live-2")
        session.add_all([a, b])
        session.flush()
        ids = {"member": a.id, "other": b.id}
    yield ids  # type: ignore[misc]


def write(database: Database, subject: str, action: str) -> int:
    with database.session() as session:
        return record_event(session, actor="test", action=action, subject=subject).id  # type: ignore[return-value]


def test_reconnect_replays_exactly_the_missed_events(client: TestClient, database: Database, request_of) -> None:  # type: ignore[no-untyped-def]
    sign_in(client, "member@example.com")
    first = write(database, f"request:{request_of['member']}", "request.submitted")
    hidden = write(database, f"request:{request_of['other']}", "request.submitted")
    second = write(database, f"request:{request_of['member']}", "request.approved")
    third = write(database, f"request:{request_of['member']}", "grant.created")
    events = read_events(client, 2, {"Last-Event-ID": str(first)})
    assert [event_id for event_id, _ in events] == [second, third]
    assert hidden not in [event_id for event_id, _ in events]
    assert "request.approved" in events[0][1]


def test_live_events_reach_every_viewer_who_may_see_them(client: TestClient, database: Database,  # type: ignore[no-untyped-def]
                                                        request_of, app) -> None:
    sign_in(client, "member@example.com")
    start = write(database, "user:1", "noise")
    results: dict[str, list[tuple[int, str]]] = {}

    def listen() -> None:
        results["member"] = read_events(client, 1, {"Last-Event-ID": str(start)})

    listener = threading.Thread(target=listen)
    listener.start()
    write(database, f"request:{request_of['other']}", "request.submitted")  # the member may not see this one
    wanted = write(database, f"request:{request_of['member']}", "request.approved")
    listener.join(15)
    assert [e[0] for e in results["member"]] == [wanted]
    # The resource's approver sees the same event, and not the other one.
    approver = TestClient(app)
    sign_in(approver, "approver@example.com")
    assert [e[0] for e in read_events(approver, 1, {"Last-Event-ID": str(start)})] == [wanted]


def test_signed_out_stream_is_refused(client: TestClient) -> None:
    assert client.get("/events", headers={"Accept": "text/event-stream", "HX-Request": "true"}).status_code == 401


def test_tailer_waits_out_a_hole_then_skips_it(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    feed = AuditFeed(database, gap_timeout=0.0)
    feed._cursor = 10
    feed._advance([12, 13])  # 11 not committed yet: the cursor stays, 12 and 13 are remembered
    assert feed._cursor == 10 and feed._delivered_above == {12, 13}
    feed._advance([11])  # the late commit arrives: everything is contiguous again
    assert feed._cursor == 13 and not feed._delivered_above
    feed._advance([15])
    feed._advance([])  # a hole older than gap_timeout is a rollback: skip it
    assert feed._cursor == 15


def test_a_stream_that_subscribes_while_the_idle_tailer_looks_misses_nothing(
        database: Database, settings, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """With nobody listening the tailer only moves its cursor to the newest id. If a stream
    subscribes (and replays) while that query runs, rows the query counts must still reach it."""
    import asyncio

    from webapp.live import feed as live

    feed = AuditFeed(database)
    joined: list[live.Subscription] = []
    newest = live.latest_event_id

    def racing_latest(db: Database) -> int:
        joined.append(feed.subscribe())  # a browser connects; its replay found nothing yet
        write(database, "request:1", "request.approved")  # then a change commits
        return newest(db)

    async def two_polls() -> list[int]:
        monkeypatch.setattr(live, "latest_event_id", racing_latest)
        await feed.poll_once()
        monkeypatch.setattr(live, "latest_event_id", newest)
        await feed.poll_once()
        queue = joined[0].queue
        return [queue.get_nowait().id for _ in range(queue.qsize())]  # type: ignore[union-attr]

    assert len(asyncio.run(two_polls())) == 1, "the change committed during the race is delivered"


def test_a_slow_subscriber_is_dropped_not_buffered(database: Database, settings) -> None:  # type: ignore[no-untyped-def]
    from webapp.core.models import utcnow
    from webapp.live.feed import FeedEvent

    feed = AuditFeed(database, queue_size=2)
    slow = feed.subscribe()
    feed.publish([FeedEvent(i, utcnow(), "a", "x", "s", {}) for i in range(1, 4)])
    assert slow.dropped and slow not in feed.subscribers
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(AccessRequest)) == 0


def test_rows_and_toasts_are_rendered_for_each_viewer(client: TestClient, database: Database,  # type: ignore[no-untyped-def]
                                                      request_of, app, people) -> None:
    request_id = request_of["member"]
    start = write(database, "user:1", "noise")
    submitted = write(database, f"request:{request_id}", "request.submitted")
    write(database, f"request:{request_id}", "request.rejected")

    approver = TestClient(app)
    sign_in(approver, "approver@example.com")
    seen = read_messages(approver, start, 2)
    assert [e.name for e in seen] == [f"row-{request_id}", "new-row", "queue-row", "toast", "pending", "audit",
                                      f"row-{request_id}", "pending", "audit"]
    assert seen[2].text == seen[0].text, "the approvals queue gets the row this approver may decide"
    row = seen[0].text
    assert row.startswith(f'<tr id="request-row-{request_id}"') and f'sse-swap="row-{request_id}"' in row
    assert "Approve" in row and "Reject" in row and "Cancel" not in row, "the approver's buttons"
    tokens = {unmask(value) for value in re.findall(r'name="csrf_token" value="([^"]+)"', row)}
    assert tokens == {approver.cookies["gh_csrf"]}, "forms carry this viewer's CSRF token (masked)"
    assert f"New request #{request_id}: Mo Member asks for live-a." in seen[3].text
    assert f'<a href="/requests/{request_id}">View the request</a>' in seen[3].text and "data-close-toast" in seen[3].text
    assert seen[5].id == str(submitted) and all(e.id is None for e in seen if e.name != "audit")

    sign_in(client, "member@example.com")
    mine = read_messages(client, start, 2)
    assert [e.name for e in mine] == [f"row-{request_id}", "new-row", "audit", f"row-{request_id}", "toast", "audit"]
    assert "Cancel" in mine[0].text and "Approve" not in mine[0].text, "the requester's buttons"
    assert f"Request #{request_id} for live-a was rejected." in mine[4].text


# Bounds on what one person can make the feed do (the review's F3) --------------------------------

def test_a_replay_reads_only_what_the_viewer_may_see(database: Database, request_of, people) -> None:  # type: ignore[no-untyped-def]
    """Last-Event-ID: 0 from a member must not read the whole audit table: the replay is
    filtered in SQL, so thousands of events about others cost nothing but the index."""
    with database.session() as session:
        session.execute(sa.insert(AuditEvent), [
            {"actor": "noise", "action": "request.submitted", "subject": f"request:{request_of['other']}",
             "request_id": request_of["other"], "details": {}, "at": utcnow()} for _ in range(3000)])
    mine = write(database, f"request:{request_of['member']}", "request.submitted")
    with database.session() as session:
        member = viewer(session, Principal(people["member"].id, "member@example.com", "Mo", "member"))
    replay = load_events(database, after=0, viewer=member)
    assert [e.id for e in replay] == [mine], "one page holds it all: the others' 3,000 rows were never read"


def test_a_page_away_too_long_is_told_to_reload(app, database: Database, request_of) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as client:
        client.app.state.settings.live_replay_limit = 5  # type: ignore[attr-defined]
        sign_in(client, "member@example.com")
        start = write(database, "user:1", "noise")
        for _ in range(6):
            latest = write(database, f"request:{request_of['member']}", "request.approval_recorded")
        first = read_stream(client, "/events", headers={"Last-Event-ID": str(start)},
                            until=lambda events: len(events) >= 1)[0]
    assert first.name == "toast" and "Reload it" in first.text and first.id == str(latest), \
        "no replay: the page reloads, and its next reconnect starts from now"


def test_one_person_keeps_a_bounded_number_of_streams(database: Database) -> None:
    feed = AuditFeed(database, streams_per_person=3)
    streams = [feed.subscribe(owner=7) for _ in range(5)]
    others = feed.subscribe(owner=8)
    assert [s.queue.qsize() for s in streams] == [1, 1, 0, 0, 0], "the two oldest were told to close"
    assert [s.queue.get_nowait() for s in streams[:2]] == [None, None]
    assert others.queue.empty() and len(feed.subscribers) == 4
    feed.unsubscribe(streams[2])
    assert len(feed.subscribers) == 3


def test_reconnecting_too_often_is_refused_with_retry_after(app, people) -> None:  # type: ignore[no-untyped-def]
    with TestClient(app) as client:
        client.app.state.settings.live_connects_per_minute = 3  # type: ignore[attr-defined]
        sign_in(client, "member@example.com")
        statuses = []
        for _ in range(4):
            with client.stream("GET", "/events") as response:
                statuses.append((response.status_code, response.headers.get("retry-after")))
    assert [s for s, _ in statuses] == [200, 200, 200, 429] and int(statuses[-1][1]) >= 1


def test_admins_hear_live_when_a_task_is_held_up_and_the_holder_when_access_is_in_place(  # type: ignore[no-untyped-def]
        client: TestClient, database: Database, request_of, app, people) -> None:
    request_id = request_of["member"]
    with database.session() as session:
        request = session.get(AccessRequest, request_id)
        agent = Agent(name="directory", kind="ldap", settings={})
        session.add(agent)
        session.flush()
        grant = Grant(request_id=request_id, user_id=request.requester_id, resource_id=request.resource_id)  # type: ignore[union-attr]
        session.add(grant)
        session.flush()
        task = FulfilmentTask(grant_id=grant.id, action="add", agent_id=agent.id, resource_id=grant.resource_id,  # type: ignore[arg-type]
                              user_id=grant.user_id, target="cn=wiki", workflow_id="live-task")
        session.add(task)
        session.flush()
        task_id, grant_id = task.id, grant.id
    start = write(database, "user:1", "noise")
    write(database, f"task:{task_id}", "task.retrying")
    write(database, f"grant:{grant_id}", "grant.active")

    admin = TestClient(app)
    sign_in(admin, "admin@example.com")
    seen = read_messages(admin, start, 2)
    toasts = [e.text for e in seen if e.name == "toast"]
    assert len(toasts) == 1 and "Access to live-a for Mo Member is held up" in toasts[0], "admins only, once"
    sign_in(client, "member@example.com")
    mine = [e.text for e in read_messages(client, start, 2) if e.name == "toast"]
    assert len(mine) == 1 and "Your access to live-a is in place." in mine[0]


def test_a_manual_tasks_assignee_hears_that_tasks_moved_and_nothing_more(  # type: ignore[no-untyped-def]
        client: TestClient, database: Database, request_of, people) -> None:
    """approver2 does live-a's manual tasks without approving live-a: their task list follows
    the grant, but the request's row, toasts and audit entries are not theirs to see."""
    request_id = request_of["member"]
    with database.session() as session:
        agent = Agent(name="console", kind="manual", settings={"assignees": "approver2@example.com"})
        session.add(agent)
        session.flush()
        session.get(Resource, session.get(AccessRequest, request_id).resource_id).agent_id = agent.id  # type: ignore[union-attr]
        grant = Grant(request_id=request_id, user_id=people["member"].id,
                      resource_id=session.get(AccessRequest, request_id).resource_id)  # type: ignore[union-attr]
        session.add(grant)
        session.flush()
        grant_id = grant.id
    sign_in(client, "approver2@example.com")
    heard: list[Event] = []
    listener = threading.Thread(target=lambda: heard.extend(read_stream(
        client, "/events", timeout=10, until=lambda events: any(e.name == "tasks" for e in events))))
    listener.start()
    time.sleep(0.5)  # subscribed: only what happens from now on is live
    write(database, f"request:{request_id}", "request.approval_recorded")  # not about tasks: nothing
    write(database, f"grant:{grant_id}", "grant.created")
    listener.join(15)
    assert [(e.name, e.text) for e in heard if e.name not in ("counters", None)] == [("tasks", "grant.created")]
    assert all(e.id is None for e in heard), "no audit entry: the request is not theirs to see"


# Fan-out (issue 16): work is done once per audience, not once per connection ----------------------

def test_one_audience_shares_one_rendering_and_admins_share_counters(app, database: Database, request_of,  # type: ignore[no-untyped-def]
                                                                      people) -> None:
    from webapp.live.counters import CounterCache
    from webapp.web.live_messages import encoded
    from webapp.web.rendering import create_templates

    request_id = request_of["member"]
    with database.session() as session:  # a second approver of the resource: the same audience
        resource_id = session.get_one(AccessRequest, request_id).resource_id
        session.add(ResourceApprover(resource_id=resource_id, user_id=people["approver2"].id))
    event_id = write(database, f"request:{request_id}", "request.submitted")
    [event] = load_events(database, after=event_id - 1)
    env = create_templates().env
    approver, second = (Principal(p.id, p.email, p.name, p.role) for p in (people["approver"], people["approver2"]))
    first = encoded(env, {"csrf_token": "token-of-the-first", "viewer_tz": None}, event, approver)
    other = encoded(env, {"csrf_token": "token-of-the-second", "viewer_tz": None}, event, second)
    assert b"token-of-the-first" in first and b"token-of-the-second" in other
    assert first.replace(b"token-of-the-first", b"token-of-the-second") == other, "one audience, one rendering"
    def renderings() -> int:
        return len([key for key in event.rendered if isinstance(key, tuple) and key[0] == "encoded"])

    assert renderings() == 1
    requester = people["member"]
    mine = encoded(env, {"csrf_token": "t", "viewer_tz": None}, event, Principal(requester.id, requester.email,
                                                                                 requester.name, requester.role))
    assert b"Cancel" in mine and b"Cancel" not in first and renderings() == 2

    loads: list[int] = []
    cache = CounterCache(database)
    original = cache._load
    cache._load = lambda principal: loads.append(principal.id) or original(principal)  # type: ignore[method-assign]
    admins = [Principal(people["admin"].id, "a@example.com", "A", "admin"), Principal(99, "b@example.com", "B", "admin")]

    async def count_for_everyone() -> list[str]:
        return [await cache.html(p, event_id, lambda c: str(c.pending)) for p in (*admins, approver, second)]

    import asyncio
    assert len(asyncio.run(count_for_everyone())) == 4
    assert sorted(loads) == sorted([admins[0].id, approver.id, second.id]), "admins share one count"
