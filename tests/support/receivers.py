"""Real servers on loopback that record what they receive: an SMTP server (aiosmtpd) and
an HTTP webhook (http.server). Tests tell them to fail the first K calls, to watch
retries happen against a real socket rather than a mock."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def free_port() -> int:
    """A loopback port nobody listens on now (aiosmtpd cannot bind port 0 and report it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(port: int, proc: subprocess.Popen[bytes], why_it_exited: Callable[[], str],
                         seconds: float = 15.0) -> None:
    """Wait until a server we started accepts connections on loopback `port`; RuntimeError
    (saying why, from `why_it_exited`) if its process ends first, or after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(why_it_exited()) from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds:g} s") from None
            time.sleep(0.05)


@dataclass(frozen=True)
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    login: str | None


@dataclass
class SmtpReceiver:
    """An SMTP server that keeps every accepted message. With `credentials` set it offers
    AUTH over plain TCP (as only a test may) and records who logged in; with `fail_first`
    it answers 451 to the first messages."""

    credentials: tuple[str, str] | None = None
    fail_first: int = 0
    attempts: list[ReceivedEmail] = field(default_factory=list)  # every DATA, refused or not
    received: list[ReceivedEmail] = field(default_factory=list)  # the accepted ones
    port: int = field(default_factory=free_port)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        parsed = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        auth = session.auth_data
        login = auth.login.decode() if isinstance(auth, LoginPassword) else None
        received = ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), parsed, login)
        with self._lock:
            self.attempts.append(received)
            if len(self.attempts) <= self.fail_first:
                return "451 Try again later"
            self.received.append(received)
        return "250 OK"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        expected = self.credentials
        ok = (
            expected is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == expected
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def start(self) -> None:
        options: dict[str, Any] = {}
        if self.credentials:
            options = {"authenticator": self._authenticate, "auth_require_tls": False}
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port, **options)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


@dataclass(frozen=True)
class ReceivedPost:
    path: str
    headers: dict[str, str]
    body: Any
    raw: bytes = b""  # the body as sent, for checking a signature over it


class HttpReceiver:
    """A webhook endpoint that records JSON POSTs: every one in `attempts`, the accepted
    ones in `received`. The first `fail_first` get `failure_status` (500 unless told). Each
    answer waits `hold_seconds`; `spans` says when each POST was in flight (monotonic)."""

    def __init__(self) -> None:
        self.fail_first = 0
        self.failure_status = 500
        self.hold_seconds = 0.0
        self.spans: list[tuple[ReceivedPost, float, float]] = []
        self.attempts: list[ReceivedPost] = []
        self.received: list[ReceivedPost] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/hooks/slack"

    def _record(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, ReceivedPost]:
        post = ReceivedPost(path, headers, json.loads(raw), raw)
        with self._lock:
            self.attempts.append(post)
            if len(self.attempts) <= self.fail_first:
                return self.failure_status, post
            self.received.append(post)
            return 200, post

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                started = time.monotonic()
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status, post = receiver._record(self.path, dict(self.headers.items()), raw)
                time.sleep(receiver.hold_seconds)
                with receiver._lock:
                    receiver.spans.append((post, started, time.monotonic()))
                body = b"ok" if status == 200 else b"server_error"
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test asserts on what was recorded, not on access logs."""

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


@pytest.fixture
def smtp_server() -> Iterator[SmtpReceiver]:
    receiver = SmtpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture
def webhook_server() -> Iterator[HttpReceiver]:
    receiver = HttpReceiver()
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()
