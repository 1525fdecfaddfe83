"""seed-demo shows fulfilment with no set-up (issue 13): in a real server on the demo data,
approving salesforce access sends a signed webhook to the app's own demo receiver, which puts
it in the outbox; the grant is active once the receiver said yes, and a revoke is delivered
the same way before the grant counts as removed."""

from __future__ import annotations

import uuid
from pathlib import Path

import sqlalchemy as sa

from support.processes import AppProcess, app_env
from support.receivers import free_port
from support.waiting import wait_for
from support.web import personal_token
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import Grant, Notification, User
from webapp.services.accounts import create_user
from webapp.services.demo import email_for, seed_demo


def test_a_demo_grant_and_its_revoke_reach_the_demo_receiver(settings: Settings, database: Database,
                                                           tmp_path: Path) -> None:
    port = free_port()
    with database.session() as session:
        seed_demo(session, base_url=f"http://127.0.0.1:{port}")
        newcomer = create_user(session, email="newcomer@example.com", name="Nia Newcomer", password=None,
                               role="member")
        tokens = {who: personal_token(session, user, name="demo")[1] for who, user in (
            ("newcomer", newcomer),
            ("approver", session.scalars(sa.select(User).where(User.email == email_for("Gabriel Souza"))).one()),
            ("admin", session.scalars(sa.select(User).where(User.email == email_for("Ada Okafor"))).one()))}
        salesforce = session.scalar(sa.text("SELECT id FROM resources WHERE name = 'salesforce'"))

    def call(who: str, path: str, data: dict[str, object]) -> dict[str, object]:
        answer = app.http.post(path, data=data, headers={"Authorization": f"Bearer {tokens[who]}",
                                                         "Accept": "application/json"})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()  # type: ignore[no-any-return]

    def delivered(verb: str) -> bool:
        with database.session() as session:
            return session.scalar(sa.select(Notification.id).where(
                Notification.channel == "webhook",
                Notification.subject == f"{verb}: newcomer@example.com in Sales Cloud users")) is not None

    def state() -> str | None:
        with database.session() as session:
            return session.scalar(sa.select(Grant.state).where(Grant.user_id == newcomer.id))

    with (tmp_path / "app.log").open("w") as log:
        app = AppProcess(app_env(settings, BASE_URL=f"http://127.0.0.1:{port}", AGENT_ALLOWED_HOSTS="127.0.0.1"),
                         log, port=port, cwd=tmp_path)
        app.start()
        try:
            request = call("newcomer", "/requests", {"resource_id": salesforce, "duration": "8h",
                                                     "reason": "Pipeline review with the sales team.",
                                                     "form_key": uuid.uuid4().hex})
            call("approver", f"/requests/{request['id']}/approve", {})
            wait_for(lambda: state() == "active", what="the grant active once the receiver said yes")
            assert delivered("Grant")
            with database.session() as session:
                grant_id = session.scalar(sa.select(Grant.id).where(Grant.user_id == newcomer.id))
            call("admin", f"/grants/{grant_id}/revoke", {"note": "demo over"})
            wait_for(lambda: state() == "removed", what="the grant removed once the receiver said yes")
            assert delivered("Revoke")
        finally:
            app.stop()
