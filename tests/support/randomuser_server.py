"""A randomuser.me-compatible API on loopback, serving made-up people from a sample file.

    GET /api/?results=N&seed=S&page=P[&nat=DE,FR]
      -> {"results": [...], "info": {"seed": S, "results": N, "page": P, "version": "1.4"}}

Like the real API, the same (seed, page, results, nat) always gives the same people, and
the person at a given position of a seed's sequence is the same whatever the page size.
People come from a pool (samples/people-5000.json by default) in a seed-dependent order;
each position gets its own login uuid, and past the end of the pool the pool repeats with
new uuids, usernames and emails, so any count can be served.

Tests (or `--fail-first` / `--delay` on the command line) can make it misbehave:

    fail_next(n, status)      answer the next n requests with `status` (503 by default)
    fail_page(page, status)   answer every request for that page with `status`
    cut_next(n)               send the next n bodies cut in half (not JSON)
    delay                     seconds to wait before each answer
    malformed_every           every k-th person of a sequence is broken in one of a few ways
    requests                  what was asked, in order: (seed, page, results, nat)

    .venv/bin/python tests/randomuser_server.py --port 8765      # for `webapp import-users` by hand
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import threading
import time
import uuid
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
DEFAULT_POOL = SAMPLES / "people-5000.json"
MAX_RESULTS = 5000
NAMESPACE = uuid.UUID("6f1c2a94-4f0e-4a43-9a43-5b7c3c0e7e11")


def _break_person(person: dict[str, Any], kind: int) -> dict[str, Any]:
    """One of five ways a record can be wrong (kind is taken modulo 5)."""
    broken = copy.deepcopy(person)
    kind %= 5
    if kind == 0:
        del broken["login"]["uuid"]
    elif kind == 1:
        broken["email"] = "not-an-email"
    elif kind == 2:
        broken["location"]["coordinates"]["latitude"] = "123.4567"
    elif kind == 3:
        broken["dob"]["age"] = "thirty"
    else:
        broken["name"] = "Jane Doe"
    return broken


class RandomUserServer:
    def __init__(self, pool: Path = DEFAULT_POOL, host: str = "127.0.0.1", port: int = 0) -> None:
        self.pool: list[dict[str, Any]] = json.loads(pool.read_text(encoding="utf-8"))["results"]
        self._by_nat: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._bodies: OrderedDict[tuple[str, int, int, str], bytes] = OrderedDict()
        self._templates: dict[str, list[tuple[str, str, str, str]]] = {}
        self.delay = 0.0
        self.malformed_every = 0
        self.requests: list[tuple[str, int, int, str]] = []
        self._fail_next: list[int] = []
        self._fail_pages: dict[int, int] = {}
        self._cut_next = 0
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    # Control --------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def fail_next(self, count: int, status: int = 503) -> None:
        with self._lock:
            self._fail_next.extend([status] * count)

    def fail_page(self, page: int, status: int = 503) -> None:
        with self._lock:
            self._fail_pages[page] = status

    def heal(self) -> None:
        """Stop every failure set up so far."""
        with self._lock:
            self._fail_next.clear()
            self._fail_pages.clear()
            self._cut_next = 0

    def cut_next(self, count: int) -> None:
        with self._lock:
            self._cut_next += count

    def start(self) -> RandomUserServer:
        self._thread = threading.Thread(target=self._server.serve_forever, name="randomuser", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RandomUserServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # People ---------------------------------------------------------------------------------

    def _candidates(self, nat: str) -> list[dict[str, Any]]:
        if not nat:
            return self.pool
        with self._lock:
            found = self._by_nat.get(nat)
            if found is None:
                wanted = {code.strip().upper() for code in nat.split(",")}
                found = self._by_nat[nat] = [p for p in self.pool if p["nat"] in wanted] or self.pool
            return found

    def person(self, seed: str, position: int, nat: str = "") -> dict[str, Any]:
        """The person at `position` (from 0) of the sequence for (seed, nat)."""
        pool = self._candidates(nat)
        start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % len(pool)
        cycle, index = divmod(start + position, len(pool))
        base = pool[index]
        person = dict(base)
        login = dict(base["login"])
        login["uuid"] = str(uuid.uuid5(NAMESPACE, f"{seed}|{nat}|{position}"))
        if cycle:
            login["username"] = f"{login['username']}{cycle}"
            local, _, domain = base["email"].partition("@")
            person["email"] = f"{local}{cycle}@{domain}"
        person["login"] = login
        if self.malformed_every and (position + 1) % self.malformed_every == 0:
            person = _break_person(person, position // self.malformed_every)
        return person

    def page(self, seed: str, page: int, results: int, nat: str = "") -> dict[str, Any]:
        first = (page - 1) * results
        return {"results": [self.person(seed, first + i, nat) for i in range(results)],
                "info": {"seed": seed, "results": results, "page": page, "version": "1.4"}}

    def _encoded(self, nat: str) -> list[tuple[str, str, str, str]]:
        """Each pool person as JSON text cut around the fields a position changes (uuid,
        username, email), so a page is string joins rather than json.dumps of dicts."""
        with self._lock:
            found = self._templates.get(nat)
        if found is None:
            found = []
            for base in self._candidates(nat):
                person = dict(base, email="\x01E\x01", login=dict(base["login"], uuid="\x01U\x01", username="\x01N\x01"))
                text = json.dumps(person, ensure_ascii=False)
                head, _, rest = text.partition('"\\u0001E\\u0001"')
                middle, _, rest = rest.partition('"\\u0001U\\u0001"')
                between, _, tail = rest.partition('"\\u0001N\\u0001"')
                found.append((head, middle, between, tail))
            with self._lock:
                self._templates[nat] = found
        return found

    def _fast_page(self, seed: str, page: int, results: int, nat: str) -> bytes:
        """What `page` gives, encoded from the templates (no broken records)."""
        pool, templates = self._candidates(nat), self._encoded(nat)
        start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") % len(pool)
        parts = []
        first = (page - 1) * results
        for position in range(first, first + results):
            cycle, index = divmod(start + position, len(pool))
            base = pool[index]
            email = base["email"]
            username = base["login"]["username"]
            if cycle:
                local, _, domain = email.partition("@")
                email, username = f"{local}{cycle}@{domain}", f"{username}{cycle}"
            head, middle, between, tail = templates[index]
            person_uuid = uuid.uuid5(NAMESPACE, f"{seed}|{nat}|{position}")
            parts.append(f'{head}{json.dumps(email, ensure_ascii=False)}{middle}"{person_uuid}"{between}'
                         f'{json.dumps(username, ensure_ascii=False)}{tail}')
        info = json.dumps({"seed": seed, "results": results, "page": page, "version": "1.4"})
        return ('{"results": [' + ", ".join(parts) + '], "info": ' + info + "}").encode()

    def _body(self, key: tuple[str, int, int, str]) -> bytes:
        with self._lock:
            body = self._bodies.get(key)
        if body is None and not self.malformed_every:
            body = self._fast_page(*key)
        if body is None:
            body = json.dumps(self.page(*key), ensure_ascii=False).encode()
            with self._lock:
                self._bodies[key] = body
                while len(self._bodies) > 64:
                    self._bodies.popitem(last=False)
        return body

    # HTTP -----------------------------------------------------------------------------------

    def _answer(self, path: str) -> tuple[int, bytes]:
        parts = urlsplit(path)
        if parts.path.rstrip("/") != "/api":
            return 404, b'{"error": "not found"}'
        query = parse_qs(parts.query)
        try:
            results = int(query.get("results", ["1"])[0])
            page = int(query.get("page", ["1"])[0])
        except ValueError:
            return 400, b'{"error": "results and page must be numbers"}'
        if not 1 <= results <= MAX_RESULTS or page < 1:
            return 400, b'{"error": "results must be 1..5000 and page at least 1"}'
        seed = query.get("seed", ["default"])[0]
        nat = query.get("nat", [""])[0].upper()
        key = (seed, page, results, nat)
        with self._lock:
            self.requests.append(key)
            status = self._fail_next.pop(0) if self._fail_next else self._fail_pages.get(page)
            cut = False
            if status is None and self._cut_next:
                self._cut_next -= 1
                cut = True
        if self.delay:
            time.sleep(self.delay)
        if status is not None:
            return status, b'{"error": "the test server was told to fail"}'
        body = self._body(key)
        return 200, body[: len(body) // 2] if cut else body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = server._answer(self.path)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:  # the client gave up (a timeout, a killed process)
                    self.close_connection = True

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A randomuser.me-compatible API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--pool", type=Path, default=DEFAULT_POOL)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--fail-first", type=int, default=0, help="answer the first N requests with 503")
    parser.add_argument("--malformed-every", type=int, default=0, help="break every k-th person")
    args = parser.parse_args(argv)
    server = RandomUserServer(args.pool, args.host, args.port)
    server.delay, server.malformed_every = args.delay, args.malformed_every
    server.fail_next(args.fail_first)
    print(f"serving {len(server.pool)} people at {server.url}/api/", flush=True)
    try:
        server._server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
