"""A loopback stand-in for the parts of Slack that Gatehouse talks to, for the tests of
decisions from Slack (tests/test_slack_actions.py).

Slack's Web API cannot run here, so this answers the two methods Gatehouse calls, in Slack's
shapes and with Slack's token check (slack_sdk's WebClient is the client under test):
`users.info` (a Slack user id -> their profile's email) and `views.open` (the reject
form, recorded). It also stands in for where Slack receives messages: the incoming webhook
the approvers' messages are posted to, and the `response_url` of each click, both recorded.
The clicks themselves are built by the tests from the messages Gatehouse posted and signed
with slack_sdk's own signature code, as Slack signs them.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BOT_TOKEN = "xoxb-gatehouse-test"
SIGNING_SECRET = "gatehouse-test-signing-secret"


class SlackStandIn:
    def __init__(self, people: dict[str, str]) -> None:
        self.people = people  # Slack user id -> profile email
        self.users_info_calls: list[str] = []
        self.views: list[dict[str, Any]] = []  # views.open bodies
        self.messages: list[dict[str, Any]] = []  # posts to the incoming webhook
        self.replies: list[dict[str, Any]] = []  # posts to a response_url
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def response_url(self, name: str = "click") -> str:
        return f"{self.base}/response/{name}"

    def _answer(self, method: str, path: str, query: dict[str, list[str]], headers: Any,
                raw: bytes) -> tuple[int, dict[str, Any] | str]:
        if path.startswith("/api/"):
            if headers.get("Authorization") != f"Bearer {BOT_TOKEN}":
                return 200, {"ok": False, "error": "invalid_auth"}
            if path == "/api/users.info":
                user = (query.get("user") or parse_qs(raw.decode()).get("user") or [""])[0]
                with self._lock:
                    self.users_info_calls.append(user)
                if user not in self.people:
                    return 200, {"ok": False, "error": "user_not_found"}
                return 200, {"ok": True, "user": {"id": user, "profile": {"email": self.people[user]}}}
            if path == "/api/views.open":
                body = json.loads(raw)
                if not body.get("trigger_id"):
                    return 200, {"ok": False, "error": "invalid_trigger"}
                view = body["view"] if isinstance(body["view"], dict) else json.loads(body["view"])
                with self._lock:
                    self.views.append({**body, "view": view})
                return 200, {"ok": True, "view": {"id": f"V{len(self.views)}", **view}}
            return 200, {"ok": False, "error": "unknown_method"}
        if method == "POST" and path.startswith("/incoming/"):
            with self._lock:
                self.messages.append(json.loads(raw))
            return 200, "ok"
        if method == "POST" and path.startswith("/response/"):
            with self._lock:
                self.replies.append(json.loads(raw))
            return 200, "ok"
        return 404, "no_service"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                url = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status, body = stand_in._answer(self.command, url.path, parse_qs(url.query), self.headers, raw)
                data = (json.dumps(body) if isinstance(body, dict) else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if isinstance(body, dict) else "text/plain")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _serve

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the tests assert on what was recorded."""

        return Handler

    def __enter__(self) -> SlackStandIn:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
