"""Where an import may fetch from and how much it reads (webapp.services.people_import.reach):
the form is no port scanner of the internal network and no memory bomb. Every peer here is
a listener the test starts on loopback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from support.web import post_form, sign_in
from webapp.app import create_app
from webapp.config import Settings
from webapp.core.db import Database
from webapp.core.models import ImportJob
from webapp.services.people_import.reach import FetchPolicy
from webapp.services.people_import.source import NOT_ALLOWED, PageCache, PageRequest, Source, SourceError, fetch_page


@contextmanager
def counting_listener() -> Iterator[tuple[int, list[int]]]:
    """A loopback port that counts the connections it gets (and answers none of them)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.1)
    seen: list[int] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                server.accept()[0].close()
                seen.append(1)
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1]), seen
    finally:
        stop.set()
        thread.join(timeout=2)
        server.close()


@pytest.fixture
def default_reach(settings: Settings, people: dict[str, Any]) -> Iterator[TestClient]:
    """The app with the default IMPORT_ALLOWED_HOSTS (randomuser.me only), an admin signed in."""
    with TestClient(create_app(settings.model_copy(update={"import_allowed_hosts": "randomuser.me"}))) as client:
        sign_in(client, "admin@example.com")
        yield client


def start_import(client: TestClient, source: str) -> Any:
    return post_form(client, "/admin/import", {"source": source, "count": "10", "seed": "s", "chunk_size": "10",
                                               "form_key": "reach-test-key"}, headers={"Accept": "application/json"})


def test_the_form_refuses_internal_addresses_without_touching_them(default_reach: TestClient,
                                                                   database: Database) -> None:
    with counting_listener() as (port, seen):
        for source in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", f"http://[::1]:{port}",
                       "http://10.0.0.1", "http://169.254.0.1", "http://192.168.1.1:8080"):
            refused = start_import(default_reach, source)
            assert refused.status_code == 422, (source, refused.text)
            assert refused.json()["fields"] == {"source": NOT_ALLOWED}, source
        assert seen == [], "nothing was asked"
    with database.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(ImportJob)) == 0


def test_an_allowed_name_that_resolves_inward_is_refused(settings: Settings, people: dict[str, Any]) -> None:
    """Being on the list is not enough: every address the name resolves to must be public or listed."""
    with counting_listener() as (port, seen):
        app = create_app(settings.model_copy(update={"import_allowed_hosts": "localhost"}))
        with TestClient(app) as client:
            sign_in(client, "admin@example.com")
            assert start_import(client, f"http://localhost:{port}").status_code == 422
        assert seen == []


def test_a_failed_fetch_says_what_kind_of_failure_not_the_remote_text(tmp_path: Path) -> None:
    with counting_listener() as (port, _seen):
        pass  # the port is free again: nothing listens there
    policy = FetchPolicy(("127.0.0.1",))
    with pytest.raises(SourceError) as failed:
        fetch_page(PageRequest(Source("url", f"http://127.0.0.1:{port}"), "s", 1, 10), PageCache(tmp_path),
                   timeout=2, policy=policy)
    assert str(failed.value) == "page 1: could not connect"


class HugeAnswer(BaseHTTPRequestHandler):
    """Answers every request with 60 MB: announced in Content-Length, or chunked and unannounced."""

    announce = True
    sent: list[int] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        block = b"x" * 65536
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if self.announce:
            self.send_header("Content-Length", str(60_000_000))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for _ in range(60_000_000 // len(block)):
                self.wfile.write(block if self.announce else b"%x\r\n%s\r\n" % (len(block), block))
                type(self).sent.append(len(block))
        except (BrokenPipeError, ConnectionResetError):
            return

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize("announced", [True, False])
def test_an_answer_larger_than_the_cap_is_refused_while_it_streams(tmp_path: Path, announced: bool) -> None:
    handler = type("Huge", (HugeAnswer,), {"announce": announced, "sent": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        source = Source("url", f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(SourceError) as refused:
            fetch_page(PageRequest(source, "s", 1, 10), PageCache(tmp_path), timeout=10,
                       policy=FetchPolicy(("127.0.0.1",), max_bytes=1_000_000))
    finally:
        server.shutdown()
        server.server_close()
    assert str(refused.value) == "page 1: the answer is larger than 1,000,000 bytes" and not refused.value.transient
    assert sum(handler.sent) < 20_000_000, "it stopped reading, instead of taking all 60 MB in"
    assert not list(tmp_path.iterdir()), "nothing was cached"
