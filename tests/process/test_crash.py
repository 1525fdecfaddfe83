"""Crash test: the app as a real process on PostgreSQL, killed with SIGKILL again and again.

The test submits and approves requests over HTTP (bearer tokens) and kills the whole
process group at chosen points, then starts it again with the same executor id and
application version, so DBOS recovers what the dead process left. Three kinds of kill:

between steps   the SMTP and webhook receivers refuse every delivery (451 / 503: nothing
                is accepted, the send steps keep retrying) and everything they accepted
                earlier has its checkpoint; then the process dies right after a submit
                returns, right after an approve returns, while a submit is in flight, or
                at a random moment while the workflows run. No message may arrive twice.
in a delivery   one receiver holds one delivery (a Slack POST or an SMTP DATA) while the
                other refuses everything, and the process dies while it waits for the
                answer. If the receiver had accepted the message, that is the window no
                sender can close: the resend after the restart is a duplicate, with the
                same dedup key and Message-ID. If it had not, the message arrives once.
at random       messages flow freely and the process dies at a random moment.

After each kill, with the process dead and the receivers shut, the test lists the deliveries
caught in the window: accepted by a receiver, with no result recorded by DBOS for their send
step. Those, and only those, must arrive a second time; for kills between steps the list
must be empty.

Between kills the receivers open for a moment, so messages flow while the work goes on. At
the end every request is approved and granted once with its audit events written once,
every expected message is in the outbox and arrived on Slack and by email, and the only
repeats are the ones counted in the window.

CRASH_TEST_SEED picks the plan's order and the random moments (a fixed default, printed in
the summary line, which `pytest -s` shows).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import random
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from support.processes import AppProcess, app_env
from support.receivers import HttpReceiver, SmtpReceiver, free_port
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import (
    AccessRequest,
    Approval,
    AuditEvent,
    Grant,
    Notification,
    Resource,
    ResourceApprover,
)
from webapp.services.accounts import create_user
from webapp.services.notifications import Message, dedup_key, message_id
from webapp.workflows.notifications import DEDUP_HEADER

pytestmark = pytest.mark.slow

EXECUTOR_ID = "crash-test-executor"
APP_VERSION = "crash-test"
REASON = "Crash test: on-call access for the incident review."
EXTERNAL = ("slack", "email")
CHANNELS = (*EXTERNAL, "outbox")
HOLD_SECONDS = 30.0  # a held delivery is let go after this even if the test forgot it
SETTLE_SECONDS = 90.0

# The kill plan: 16 between steps (no message may repeat), 8 during a delivery (4 of them
# inside the window), 4 at a random moment while messages flow (repeats only for deliveries
# caught in the window).
BETWEEN_STEPS = ("after-submit", "after-approve", "mid-submit", "mid-workflow")
IN_DELIVERY = ("slack-accepted", "email-accepted", "slack-unaccepted", "email-unaccepted")
RANDOM = ("mid-traffic",)
PLAN = [*BETWEEN_STEPS * 4, *IN_DELIVERY * 2, *RANDOM * 4]


# Receivers that can refuse, accept, or hold one delivery ---------------------------------

@dataclass
class Held:
    """The one delivery a receiver keeps waiting for its answer."""

    key: str
    accepted: bool  # recorded as received before the wait (the window) or not
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class Gate:
    """What a receiver does with each delivery: accept it (open), refuse it with a transient
    error and keep nothing (refuse), or hold the first one and refuse the rest (hold).
    Deciding and recording happen under one lock, so after `refuse()` returns nothing more
    is accepted."""

    def __init__(self, channel: str) -> None:
        self.channel = channel
        self._lock = threading.Lock()
        self._mode = "refuse"
        self._hold: Held | None = None
        self.accepted: list[tuple[str, Any]] = []  # (dedup key, what arrived)
        self.arrivals = 0
        self.tries: Counter[str] = Counter()  # every delivery that arrived, by dedup key, whatever the verdict

    def open(self) -> None:
        with self._lock:
            self._mode = "open"

    def refuse(self) -> None:
        with self._lock:
            self._mode = "refuse"

    def hold_next(self, *, accept: bool) -> Held:
        held = Held(key="", accepted=accept)
        with self._lock:
            self._mode, self._hold = "hold", held
        return held

    def arrive(self, key: str, item: Any) -> tuple[str, Held | None]:
        """'accept', 'refuse' or 'hold' (with the Held to wait on)."""
        with self._lock:
            self.arrivals += 1
            self.tries[key] += 1
            if self._mode == "open":
                self.accepted.append((key, item))
                return "accept", None
            held = self._hold
            if self._mode == "hold" and held is not None and not held.arrived.is_set():
                held.key = key
                if held.accepted:
                    self.accepted.append((key, item))
                held.arrived.set()
                return "hold", held
            return "refuse", None

    def release_all(self) -> None:
        with self._lock:
            if self._hold is not None:
                self._hold.release.set()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(key for key, _ in self.accepted)

    def items(self) -> list[tuple[str, Any]]:
        with self._lock:
            return list(self.accepted)


@dataclass
class GatedSmtp(SmtpReceiver):
    gate: Gate = field(default_factory=lambda: Gate("email"))

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        verdict, held = self.gate.arrive(str(parsed[DEDUP_HEADER]), parsed)
        if held is not None:
            deadline = time.monotonic() + HOLD_SECONDS
            while not held.release.is_set() and time.monotonic() < deadline:
                await asyncio.sleep(0.01)  # the sender dies meanwhile; its reply goes nowhere
            return "250 OK" if held.accepted else "451 Try again later"
        return "250 OK" if verdict == "accept" else "451 Try again later"


class GatedWebhook(HttpReceiver):
    def __init__(self) -> None:
        self.gate = Gate("slack")
        super().__init__()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        gate = self.gate

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                item = {"body": body, "header_key": self.headers.get(DEDUP_HEADER)}
                verdict, held = gate.arrive(str(body.get("dedup_key")), item)
                if held is not None:
                    held.release.wait(HOLD_SECONDS)
                    verdict = "accept" if held.accepted else "refuse"
                status = 200 if verdict == "accept" else 503
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the sender was killed while we held its POST
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


@pytest.fixture
def gated_smtp() -> Iterator[GatedSmtp]:
    receiver = GatedSmtp()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.gate.release_all()
        receiver.stop()


@pytest.fixture
def gated_webhook() -> Iterator[GatedWebhook]:
    receiver = GatedWebhook()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.gate.release_all()
        receiver.stop()


# The app as a process ---------------------------------------------------------------------

# The scenario -------------------------------------------------------------------------------

@dataclass
class People:
    requester: Any
    approvers: list[Any]
    requester_token: str
    approver_token: str


@dataclass
class Tally:
    kills: Counter[str] = field(default_factory=Counter)
    window: Counter[str] = field(default_factory=Counter)  # per kind: deliveries caught in the window
    submit_races: int = 0  # a re-post of a known form key answered 422 "already pending"
    mid_submit_states: Counter[str] = field(default_factory=Counter)


def expected_keys(request_id: int, people: People) -> dict[str, set[str]]:
    """Per channel, the dedup keys an approved request must produce."""
    wanted = [("request.submitted", a.email) for a in people.approvers]
    wanted.append(("request.approved", people.requester.email))
    return {
        channel: {dedup_key(channel, Message(request_id, event, to, "", "", "")) for event, to in wanted}
        for channel in CHANNELS
    }


class Scenario:
    """Drives the app over HTTP, kills and restarts it, and keeps the books."""

    def __init__(self, app: AppProcess, database: Database, people: People, resource_ids: list[int],
                 smtp: GatedSmtp, webhook: GatedWebhook, rng: random.Random,
                 system: sa.Engine) -> None:
        self.app, self.db, self.people, self.rng = app, database, people, rng
        self.free_resources = list(resource_ids)
        self.gates = {"email": smtp.gate, "slack": webhook.gate}
        self.form_keys: dict[str, int] = {}  # form key -> request id
        self.pending: list[int] = []  # submitted, not approved yet
        self.approved: list[int] = []
        self.tally = Tally()
        self.submit_seconds: list[float] = []
        self.system = system
        self.window_keys: list[str] = []  # accepted, then killed before the checkpoint (once per kill)
        self.unaccepted_keys: list[str] = []  # held, then killed before it was accepted

    # HTTP -----------------------------------------------------------------------------------

    def _headers(self, token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def _post_submission(self, client: httpx.Client, form_key: str, resource_id: int, duration: str) -> httpx.Response:
        return client.post("/requests", headers=self._headers(self.people.requester_token), data={
            "resource_id": str(resource_id), "duration": duration, "reason": REASON, "form_key": form_key})

    def new_submission(self) -> tuple[str, int, str]:
        resource_id = self.free_resources.pop(0)
        duration = "8h" if resource_id % 3 == 0 else "permanent"  # some workflows stay asleep
        return uuid.uuid4().hex, resource_id, duration

    def ensure_submitted(self, form_key: str, resource_id: int, duration: str) -> int:
        """Post (again) until the request exists; the same key must always name the same one."""
        deadline = time.monotonic() + 30
        while True:
            sent = time.monotonic()
            response = self._post_submission(self.app.http, form_key, resource_id, duration)
            if response.status_code == 201:
                self.submit_seconds.append(time.monotonic() - sent)
                request_id = int(response.json()["id"])
                known = self.form_keys.setdefault(form_key, request_id)
                assert known == request_id, f"form key {form_key} made requests {known} and {request_id}"
                return request_id
            if response.status_code == 422 and "already have a pending request" in response.text:
                # The recovered workflow recorded the request between the endpoint's two checks.
                self.tally.submit_races += 1
            elif response.status_code != 503:
                raise AssertionError(f"submit answered {response.status_code}: {response.text}")
            assert time.monotonic() < deadline, f"form key {form_key} never answered 201"
            time.sleep(0.2)

    def submit(self, count: int = 1) -> list[int]:
        ids = []
        for _ in range(count):
            request_id = self.ensure_submitted(*self.new_submission())
            self.pending.append(request_id)
            ids.append(request_id)
        return ids

    def status(self, request_id: int) -> str:
        with self.db.session() as session:
            return session.get_one(AccessRequest, request_id).status

    def approve(self, count: int) -> list[int]:
        if len(self.pending) < count:
            self.submit(count - len(self.pending))
        chosen = [self.pending.pop(0) for _ in range(count)]
        for request_id in chosen:
            response = self.app.http.post(f"/requests/{request_id}/approve", data={"comment": "ok"},
                                          headers=self._headers(self.people.approver_token))
            if response.status_code == 503:  # sent, not applied within 10 s: a slow recovery
                wait_for(lambda: self.status(request_id) == "approved", timeout=20,
                         what=f"request {request_id} to be approved")
            else:
                assert response.status_code == 200, f"approve #{request_id}: {response.status_code} {response.text}"
                assert response.json()["status"] == "approved"
            self.approved.append(request_id)
        return chosen

    # Receivers ------------------------------------------------------------------------------

    def open_receivers(self) -> None:
        for gate in self.gates.values():
            gate.open()

    def quiet_receivers(self) -> None:
        """Refuse from now on, and wait until every accepted message has its checkpoint (its
        row says sent, which the workflow writes only after the send step returned): then no
        delivery is inside the window, and a kill cannot duplicate anything."""
        for gate in self.gates.values():
            gate.refuse()
        keys = {key for gate in self.gates.values() for key, _ in gate.items()}

        def settled() -> bool:
            if not keys:
                return True
            with self.db.session() as session:
                sent = set(session.scalars(sa.select(Notification.dedup_key).where(
                    Notification.dedup_key.in_(keys), Notification.status == "sent")))  # type: ignore[attr-defined]
            return sent == keys

        wait_for(settled, timeout=20, what="accepted messages to be checkpointed")

    def flow(self) -> None:
        """Let messages through for a moment, then stop them cleanly."""
        self.open_receivers()
        time.sleep(self.rng.uniform(0.05, 0.4))
        self.quiet_receivers()

    # Kills ----------------------------------------------------------------------------------

    def kill(self, kind: str) -> set[str]:
        """SIGKILL, then shut the receivers and name the deliveries caught in the window: the
        receiver accepted them but DBOS holds no result for their send step. Only these may
        arrive twice; the database is frozen until the restart, so the answer is exact."""
        self.app.kill()
        self.tally.kills[kind] += 1
        for gate in self.gates.values():
            gate.refuse()
        accepted = {key for gate in self.gates.values() for key in gate.counts()}
        with self.system.connect() as conn:
            checkpointed = set(conn.execute(sa.text(
                "SELECT workflow_uuid FROM dbos.operation_outputs WHERE function_name LIKE 'notify.%.send' "
                "AND output IS NOT NULL")).scalars())
        caught = {key for key in accepted if f"notify:{key}" not in checkpointed}
        if kind in BETWEEN_STEPS:
            assert not caught, f"a {kind} kill landed inside a delivery: {caught}"
        self.tally.window[kind] += len(caught)
        self.window_keys.extend(caught)
        return caught

    def await_resends(self, caught: set[str], unaccepted: set[str] | None = None) -> None:
        """After a restart: the caught deliveries must arrive again, and one held before it
        was accepted must arrive (once); then all of them get their checkpoint."""
        wanted = {key: 2 for key in caught} | {key: 1 for key in unaccepted or ()}
        if not wanted:
            return
        self.open_receivers()
        wait_for(lambda: all(sum(g.counts()[key] for g in self.gates.values()) >= n for key, n in wanted.items()),
                 timeout=20, what=f"the interrupted deliveries {sorted(wanted)} to arrive again")
        self.quiet_receivers()

    def restart(self, kind: str) -> None:
        caught = self.kill(kind)
        self.app.start()
        self.await_resends(caught)

    def run(self, kind: str) -> None:
        self.flow()
        if kind == "after-submit":
            self.submit(2)
            self.restart(kind)
        elif kind == "after-approve":
            self.approve(2)
            self.restart(kind)
        elif kind == "mid-submit":
            self._kill_mid_submit()
        elif kind == "mid-workflow":
            self.approve(min(2, max(1, len(self.pending))))
            self.submit(1)
            time.sleep(self.rng.uniform(0.0, 0.3))
            self.restart(kind)
        elif kind == "mid-traffic":
            self.open_receivers()
            self.approve(min(2, max(1, len(self.pending))))
            self.submit(1)
            time.sleep(self.rng.uniform(0.0, 0.4))
            self.restart(kind)
        else:
            self._kill_in_delivery(kind)

    def _kill_mid_submit(self) -> None:
        """Kill while a submission is on the wire, then post the same form key again."""
        form_key, resource_id, duration = self.new_submission()
        outcome: dict[str, Any] = {}

        def post() -> None:
            with httpx.Client(base_url=self.app.base_url, timeout=30.0) as client:
                try:
                    outcome["response"] = self._post_submission(client, form_key, resource_id, duration)
                except httpx.TransportError as error:
                    outcome["error"] = error

        thread = threading.Thread(target=post)
        thread.start()
        time.sleep(self.rng.uniform(0.0, 1.3 * statistics.median(self.submit_seconds)))
        self.kill("mid-submit")
        thread.join(timeout=30)
        assert not thread.is_alive()
        first = outcome.get("response")
        self.tally.mid_submit_states[self._submission_state(form_key, first)] += 1
        self.app.start()
        request_id = self.ensure_submitted(form_key, resource_id, duration)
        if first is not None and first.status_code == 201:
            assert int(first.json()["id"]) == request_id
        self.pending.append(request_id)

    def _submission_state(self, form_key: str, response: httpx.Response | None) -> str:
        """How far the killed submission got: its answer, its row, its workflow, or nothing."""
        if response is not None:
            return f"answered {response.status_code}"
        workflow_id = f"request-{self.people.requester.id}-{form_key}"
        with self.db.session() as session:
            if session.scalar(sa.select(AccessRequest.id).where(AccessRequest.workflow_id == workflow_id)):
                return "recorded, answer lost"
        with self.system.connect() as conn:
            started = conn.execute(sa.text("SELECT 1 FROM dbos.workflow_status WHERE workflow_uuid = :id"),
                                   {"id": workflow_id}).first()
        return "workflow started, not recorded" if started else "nothing started"

    def _kill_in_delivery(self, kind: str) -> None:
        """Hold one delivery at its receiver (the other receiver refuses all) and kill the
        app while it waits for the answer."""
        channel, mode = kind.split("-")
        self.submit(1)  # fresh deliveries for both channels, all refused for now
        held = self.gates[channel].hold_next(accept=mode == "accepted")
        assert held.arrived.wait(20), f"no {channel} delivery arrived to hold"
        caught = self.kill(kind)
        held.release.set()
        assert caught == ({held.key} if held.accepted else set()), (caught, held)
        if not held.accepted:
            self.unaccepted_keys.append(held.key)
        self.app.start()
        self.await_resends(caught, set() if held.accepted else {held.key})

    # The end ----------------------------------------------------------------------------------

    def finish(self) -> None:
        """Approve what is left, open the receivers and wait until everything settled."""
        self.approve(len(self.pending))
        self.open_receivers()
        ids = list(self.approved)
        wanted = {channel: set().union(*(expected_keys(i, self.people)[channel] for i in ids)) for channel in CHANNELS}

        def settled() -> bool:
            with self.db.session() as session:
                statuses = set(session.scalars(sa.select(AccessRequest.status)))
                rows = session.execute(sa.select(Notification.dedup_key, Notification.status)).all()
            sent = {key for key, status in rows if status == "sent"}
            arrived = all(wanted[c] <= set(self.gates[c].counts()) for c in EXTERNAL)
            return statuses == {"approved"} and sent >= set().union(*wanted.values()) and arrived

        wait_for(settled, what="every request approved and every message delivered", timeout=SETTLE_SECONDS,
                   interval=0.2)


def _delivery_backlog(system: sa.Engine) -> int:
    with system.connect() as conn:
        return int(conn.execute(sa.text(
            "SELECT count(*) FROM dbos.workflow_status WHERE status IN ('PENDING', 'ENQUEUED') "
            "AND workflow_uuid LIKE 'notify:%'")).scalar_one())


def _workflow_statuses(system: sa.Engine) -> tuple[Counter[str], int]:
    """How many workflows end in each status, and the most dispatches any one needed; not
    counting the sweep's scheduled ticks (one may be enqueued when the app stops)."""
    with system.connect() as conn:
        rows = conn.execute(sa.text("SELECT status, recovery_attempts FROM dbos.workflow_status "
                                    "WHERE schedule_name IS NULL")).all()
    return Counter(status for status, _ in rows), max((n or 0 for _, n in rows), default=0)


# Fixtures -----------------------------------------------------------------------------------

def make_people(db: Database) -> People:
    with db.session() as session:
        create_user(session, email="root@example.test", name="Ria Root", password=None, role="admin")
        requester = create_user(session, email="mo@example.test", name="Mo Member", password=None, role="member")
        approvers = [create_user(session, email=f"approver{i}@example.test", name=f"Approver {i}", password=None,
                                 role="approver") for i in (1, 2)]
        _, requester_token = personal_token(session, requester, name="crash")
        _, approver_token = personal_token(session, approvers[0], name="crash")
        return People(requester, approvers, requester_token, approver_token)


def make_resources(db: Database, people: People, count: int) -> list[int]:
    """One resource per request: a person may have one pending request per resource."""
    with db.session() as session:
        ids = []
        for n in range(count):
            resource = Resource(name=f"crash-db-{n:03d}", kind="database")
            session.add(resource)
            session.flush()
            for approver in people.approvers:
                session.add(ResourceApprover(resource_id=resource.id, user_id=approver.id))  # type: ignore[arg-type]
            ids.append(resource.id)
        return ids  # type: ignore[return-value]


def crash_env(settings: Settings, port: int, smtp: GatedSmtp, webhook: GatedWebhook) -> dict[str, str]:
    return app_env(
        settings,
        EXECUTOR_ID=EXECUTOR_ID,
        APP_VERSION=APP_VERSION,
        BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_WEBHOOK_URL=webhook.url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_STARTTLS="false",
        SMTP_FROM="gatehouse@example.test",
        SUBMIT_RATE_LIMIT="100000",
        SLACK_CONCURRENCY="2",
        SLACK_RATE_LIMIT="10000",
        SLACK_RATE_PERIOD="1",
        EMAIL_RATE_LIMIT="10000",
        EMAIL_RATE_PERIOD="1",
        # Refused sends retry every 0.1 s and never run out while the receivers are shut.
        NOTIFY_RETRY_INTERVAL_SECONDS="0.1",
        NOTIFY_BACKOFF_RATE="1",
        NOTIFY_MAX_ATTEMPTS="100000",
        NOTIFY_TIMEOUT_SECONDS="10",
    )


# The test -----------------------------------------------------------------------------------

def test_kill_9_loses_and_repeats_nothing(pg_settings: Settings, database: Database, gated_smtp: GatedSmtp,
                                          gated_webhook: GatedWebhook, tmp_path: Path) -> None:
    began = time.monotonic()
    seed = int(os.environ.get("CRASH_TEST_SEED", "20250611"))
    rng = random.Random(seed)
    people = make_people(database)
    resource_ids = make_resources(database, people, 80)
    port = free_port()
    log_path = tmp_path / "app.log"
    plan = list(PLAN)
    rng.shuffle(plan)
    plan.insert(0, "after-submit")  # something to approve and deliver from the start
    system = sa.create_engine(pg_settings.system_database_url)

    with log_path.open("w") as log:
        app = AppProcess(crash_env(pg_settings, port, gated_smtp, gated_webhook), log, port=port, cwd=tmp_path)
        scenario = Scenario(app, database, people, resource_ids, gated_smtp, gated_webhook, rng, system)
        try:
            app.start()
            for kind in plan:
                scenario.run(kind)
            scenario.finish()
            wait_for(lambda: _delivery_backlog(system) == 0, what="the delivery workflows to finish", timeout=30,
                       interval=0.2)
        except BaseException:
            log.flush()
            print(f"\n--- app log (tail of {log_path}) ---\n" + log_path.read_text()[-6000:])
            raise
        finally:
            app.stop()
            statuses, dispatches = _workflow_statuses(system)
            system.dispose()

    tally = scenario.tally
    ids = scenario.approved
    assert sorted(ids) == sorted(scenario.form_keys.values())

    # Every request approved once, granted once, and its history written once.
    with database.session() as session:
        requests = {r.id: r for r in session.scalars(sa.select(AccessRequest))}
        grants = session.execute(sa.select(Grant.request_id, Grant.id)).all()
        events = session.execute(sa.select(AuditEvent.subject, AuditEvent.action)
                                 .where(sa.or_(AuditEvent.subject.like("request:%"),  # type: ignore[attr-defined]
                                               AuditEvent.subject.like("grant:%")))  # type: ignore[attr-defined]
                                 .order_by(AuditEvent.id)).all()
        approvals = Counter(session.scalars(sa.select(Approval.request_id).where(Approval.counted)))
        rows = session.execute(sa.select(Notification.dedup_key, Notification.status, Notification.channel)).all()
        attempts = dict(session.execute(sa.select(Notification.dedup_key, Notification.attempts)).all())
    assert set(requests) == set(ids)
    assert {r.status for r in requests.values()} == {"approved"}
    grant_of = dict(grants)
    assert len(grants) == len(ids) and set(grant_of) == set(ids), "one grant per request"
    history: dict[str, list[str]] = {}
    for subject, action in events:
        history.setdefault(subject, []).append(action)
    for request_id in ids:
        assert history.get(f"request:{request_id}") == ["request.submitted", "request.approved"], request_id
        assert history.get(f"grant:{grant_of[request_id]}") == ["grant.created"], request_id
        assert approvals[request_id] == 1, request_id
    assert len(history) == 2 * len(ids), f"unexpected audit subjects: {set(history) - set(requests)}"
    assert set(statuses) <= {"SUCCESS", "PENDING"}, statuses  # PENDING: the 8 h grants, asleep

    # Every expected message stored once per channel, and sent.
    wanted = {c: set().union(*(expected_keys(i, people)[c] for i in ids)) for c in CHANNELS}
    assert Counter(channel for _, _, channel in rows) == {c: len(wanted[c]) for c in CHANNELS}
    assert {key for key, _, _ in rows} == set().union(*wanted.values())
    assert {status for _, status, _ in rows} == {"sent"}

    # At the receivers: every expected message, each once, except the repeats of deliveries
    # a kill caught in the window, which must be copies (same dedup key, same Message-ID).
    repeats: Counter[str] = Counter()
    for channel in EXTERNAL:
        gate = scenario.gates[channel]
        counts = gate.counts()
        assert set(counts) == wanted[channel], \
            f"{channel}: missing {wanted[channel] - set(counts)}, unexpected {set(counts) - wanted[channel]}"
        repeats.update({key: n - 1 for key, n in counts.items() if n > 1})
        # The outbox counts every try, those cut short by a kill and those refused included.
        short = {key: (attempts[key], n) for key, n in gate.tries.items() if attempts[key] < n}
        assert not short, f"{channel}: fewer attempts recorded than tries received (recorded, received): {short}"
        copies: dict[str, list[Any]] = {}
        for key, item in gate.items():
            copies.setdefault(key, []).append(item)
        for key, items in copies.items():
            if channel == "slack":
                assert all(item["header_key"] == key == item["body"]["dedup_key"] for item in items), key
                assert all(item["body"] == items[0]["body"] for item in items), f"{key}: the copies differ"
            else:
                assert {str(m["Message-ID"]) for m in items} == {message_id(key)}, key
                assert len({(str(m["Subject"]), str(m["To"]), m.get_content()) for m in items}) == 1, key
    caught = Counter(scenario.window_keys)
    between_steps = sum(tally.kills[k] for k in BETWEEN_STEPS)
    in_delivery = sum(tally.kills[k] for k in IN_DELIVERY)
    kinds = [*BETWEEN_STEPS, *IN_DELIVERY, *RANDOM]

    print(
        f"\ncrash test (seed {seed}): {sum(tally.kills.values())} kills -9: "
        f"between steps {between_steps} (" + ", ".join(f"{k} {tally.kills[k]}" for k in BETWEEN_STEPS)
        + f"), during a delivery {in_delivery} (" + ", ".join(f"{k} {tally.kills[k]}" for k in IN_DELIVERY)
        + f"), at random with messages flowing {tally.kills['mid-traffic']}; "
        f"{len(ids)} requests approved, {len(wanted['slack'])} slack + {len(wanted['email'])} email messages; "
        f"window duplicates {sum(repeats.values())} (" + ", ".join(f"{k} {tally.window[k]}" for k in kinds
                                                           if tally.window[k])
        + f"), same dedup key and Message-ID; other duplicates {sum((repeats - caught).values())}; "
        f"mid-submit kills found {dict(tally.mid_submit_states)}; submit 422 races {tally.submit_races}; "
        f"workflows {dict(statuses)}, most dispatches of one {dispatches}; "
        f"restart {statistics.mean(app.start_seconds):.2f} s avg; total {time.monotonic() - began:.1f} s"
    )
    assert sum(tally.kills.values()) >= 20
    # The repeats are exactly the deliveries caught in the window, once per kill that caught them;
    # a delivery held before it was accepted arrived once.
    assert repeats == caught, (repeats, caught)
    assert not repeats.keys() & set(scenario.unaccepted_keys)
    assert all(tally.window[k] == 0 for k in BETWEEN_STEPS)
