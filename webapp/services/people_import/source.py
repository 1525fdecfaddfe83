"""Where people come from, and reading one page of them.

A source is the base URL of a randomuser.me-compatible API
(`GET {base}/api/?results=N&seed=S&page=P&nat=..`, answering
`{"results": [...], "info": {"seed", "results", "page", "version"}}`) or a local JSON file
in the same format, read as pages of N records.

API pages are cached on disk, one file per (base, seed, page, results, nat), written
atomically, so a re-run or a resumed job never asks the API again. Parsed pages (and
parsed files) are also kept in a small in-process LRU: the chunks of one page usually run
in the process that fetched it and need not parse it again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit

import httpx

from webapp.services.people_import.reach import FetchPolicy, NotAllowed

log = logging.getLogger(__name__)
API_MAX_RESULTS = 5000  # randomuser.me serves at most this many people per request
_LRU_SIZE = 16


class SourceError(Exception):
    """A page could not be read. Holds plain values only: DBOS records a step's error and
    raises it again on replay."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message, transient)
        self.message = message
        self.transient = transient

    def __str__(self) -> str:
        return self.message


class PageMissing(SourceError):
    """The page is not in the cache (never fetched here, or the cache was cleared)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, True)

    def __reduce__(self) -> Any:
        return (PageMissing, (self.message,))


class SourceRefused(ValueError):
    """The text given as a source is not an http(s) URL or an allowed JSON file."""


@dataclass(frozen=True)
class Source:
    kind: Literal["url", "file"]
    location: str  # the API base URL without a trailing slash, or an absolute file path

    def describe(self) -> str:
        return self.location if self.kind == "url" else Path(self.location).name


@dataclass(frozen=True)
class PageRequest:
    source: Source
    seed: str
    page: int  # from 1
    results: int  # people per page
    nat: str = ""

    def url(self) -> str:
        query = {"results": self.results, "seed": self.seed, "page": self.page}
        if self.nat:
            query["nat"] = self.nat
        return f"{self.source.location}/api/?{urlencode(query)}"

    def cache_key(self) -> str:
        identity = json.dumps([self.source.kind, self.source.location, self.seed, self.page, self.results, self.nat])
        return hashlib.sha256(identity.encode()).hexdigest()


NOT_ALLOWED = "That address is not an allowed import source (IMPORT_ALLOWED_HOSTS)."


def parse_source(text: str, *, files_dir: Path | None, policy: FetchPolicy | None = None) -> Source:
    """A URL (http or https, no query) or a JSON file. With `files_dir` (the web form) a file
    must be named by its bare name and live in that directory; without it (the CLI) any
    readable path will do. With `policy`, a URL must name an allowed host (webapp.services.people_import.reach)."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        parts = urlsplit(text)
        try:
            port = parts.port
        except ValueError:
            raise SourceRefused("Give the API's address without a query, e.g. https://randomuser.me") from None
        if not parts.hostname or parts.query or parts.fragment or parts.username or parts.password:
            raise SourceRefused("Give the API's address without a query, e.g. https://randomuser.me")
        if policy is not None:
            try:
                policy.check_host(parts.hostname, port or (443 if parts.scheme == "https" else 80))
            except NotAllowed as refused:
                log.warning("import source refused: %s", refused)
                raise SourceRefused(NOT_ALLOWED) from None
        path = parts.path.rstrip("/")
        if path.endswith("/api"):
            path = path[: -len("/api")]
        port = f":{parts.port}" if parts.port else ""
        return Source("url", f"{parts.scheme}://{parts.hostname}{port}{path}")
    if "://" in text:
        raise SourceRefused("Only http and https addresses are supported.")
    if files_dir is not None:
        if not text or "/" in text or "\\" in text or text.startswith(".") or "\x00" in text:
            raise SourceRefused(f"Give an http(s) address or the name of a file in {files_dir}/.")
        candidate = (files_dir / text).resolve()
        if candidate.parent != files_dir.resolve():
            raise SourceRefused(f"Give an http(s) address or the name of a file in {files_dir}/.")
    else:
        candidate = Path(text).expanduser().resolve()
    if candidate.suffix != ".json" or not candidate.is_file():
        raise SourceRefused(f"No JSON file named {text[:100]!r}" + (f" in {files_dir}/." if files_dir else "."))
    return Source("file", str(candidate))


def available_files(files_dir: Path) -> list[str]:
    """The JSON files the web form may name."""
    if not files_dir.is_dir():
        return []
    return sorted(p.name for p in files_dir.iterdir() if p.suffix == ".json" and p.is_file())


def count_in_file(source: Source) -> int:
    return len(_file_records(source))


# Reading -------------------------------------------------------------------------------------

class _ParsedPages:
    """A small LRU of parsed pages and files, shared by the threads of one process."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Any, list[Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> list[Any] | None:
        with self._lock:
            records = self._items.get(key)
            if records is not None:
                self._items.move_to_end(key)
            return records

    def put(self, key: Any, records: list[Any]) -> None:
        with self._lock:
            self._items[key] = records
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


PARSED = _ParsedPages(_LRU_SIZE)


def _results_of(document: Any, where: str) -> list[Any]:
    if not isinstance(document, dict):
        raise SourceError(f"{where}: expected a JSON object with 'results'", False)
    if "error" in document and "results" not in document:
        raise SourceError(f"{where}: the source answered with an error: {str(document['error'])[:200]}", False)
    results = document.get("results")
    if not isinstance(results, list):
        raise SourceError(f"{where}: 'results' is missing or not a list", False)
    return results


def _file_records(source: Source) -> list[Any]:
    path = Path(source.location)
    try:
        stat = path.stat()
    except OSError as exc:
        raise SourceError(f"{path.name}: {exc.strerror or exc}", False) from None
    key = ("file", source.location, stat.st_mtime_ns, stat.st_size)
    records = PARSED.get(key)
    if records is None:
        try:
            document = json.loads(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise SourceError(f"{path.name}: not readable JSON ({exc})", False) from None
        records = _results_of(document, path.name)
        PARSED.put(key, records)
    return records


class PageCache:
    """API pages on disk: `<dir>/<sha256 of the request>.json`, the body as received."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, request: PageRequest) -> Path:
        return self.directory / f"{request.cache_key()}.json"

    def has(self, request: PageRequest) -> bool:
        return self.path(request).is_file()

    def store(self, request: PageRequest, body: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        target = self.path(request)
        temporary = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_bytes(body)  # no fsync: a page cut short by a crash fails to parse and is fetched again
        os.replace(temporary, target)

    def load(self, request: PageRequest) -> list[Any]:
        key = ("page", request.cache_key())
        records = PARSED.get(key)
        if records is not None:
            return records
        try:
            body = self.path(request).read_bytes()
        except FileNotFoundError:
            raise PageMissing(f"page {request.page} is not in the cache") from None
        try:
            records = _results_of(json.loads(body), f"page {request.page}")
        except ValueError:  # a damaged cache file: fetch the page again
            self.path(request).unlink(missing_ok=True)
            raise PageMissing(f"page {request.page} in the cache is damaged") from None
        PARSED.put(key, records)
        return records


def is_transient_status(code: int) -> bool:
    return code >= 500 or code in (408, 425, 429)


_client_lock = threading.Lock()
_client: httpx.Client | None = None


def _http() -> httpx.Client:
    """One client per process: kept-alive connections, and one TLS context instead of a new
    one per page (building it costs more CPU than parsing a page)."""
    global _client
    with _client_lock:
        if _client is None:
            _client = httpx.Client(headers={"Accept": "application/json"}, follow_redirects=False)
        return _client


_inflight_lock = threading.Lock()
_inflight: dict[str, threading.Lock] = {}


def fetch_page(request: PageRequest, cache: PageCache, *, timeout: float, policy: FetchPolicy) -> tuple[int, bool]:
    """Make sure the page can be read: for an API, fetch it unless it is cached. Returns
    (people on the page, whether the source was asked). Within a process one page is
    fetched by one thread at a time: the others wait and then find it cached."""
    if request.source.kind == "file":
        return len(page_records(request, cache)), False
    key = request.cache_key()
    with _inflight_lock:
        lock = _inflight.setdefault(key, threading.Lock())
    with lock:
        try:
            if cache.has(request):
                try:
                    return len(cache.load(request)), False
                except PageMissing:  # damaged and removed: fetch it again
                    pass
            return _fetch(request, cache, timeout=timeout, policy=policy)
        finally:
            with _inflight_lock:
                _inflight.pop(key, None)


def _failure(error: httpx.HTTPError) -> str:
    """What the page says about a failed request: its kind, not the remote's words."""
    if isinstance(error, httpx.TimeoutException):
        return "no answer in time"
    if isinstance(error, httpx.ConnectError):
        return "could not connect"
    if isinstance(error, httpx.TransportError):
        return "the connection broke"
    return "the request failed"


def _read_capped(response: httpx.Response, where: str, max_bytes: int) -> bytes:
    too_big = SourceError(f"{where}: the answer is larger than {max_bytes:,} bytes", False)
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes:
        raise too_big
    parts, size = [], 0
    for part in response.iter_bytes():
        size += len(part)
        if size > max_bytes:
            raise too_big
        parts.append(part)
    return b"".join(parts)


def _fetch(request: PageRequest, cache: PageCache, *, timeout: float, policy: FetchPolicy) -> tuple[int, bool]:
    where = f"page {request.page}"
    url = request.url()
    parts = urlsplit(url)
    try:
        policy.check_host(parts.hostname or "", parts.port or (443 if parts.scheme == "https" else 80))
        with _http().stream("GET", url, timeout=timeout) as response:
            stream = response.extensions.get("network_stream")
            peer = stream.get_extra_info("server_addr") if stream is not None else None
            if peer:
                policy.check_peer(peer[0])
            if response.status_code != 200:
                raise SourceError(f"{where}: HTTP {response.status_code}", is_transient_status(response.status_code))
            body = _read_capped(response, where, policy.max_bytes)
    except NotAllowed as refused:
        log.warning("import fetch refused: %s", refused)
        raise SourceError(f"{where}: {NOT_ALLOWED}", False) from None
    except httpx.HTTPError as exc:
        log.warning("import fetch of %s failed: %s: %s", url, type(exc).__name__, exc)
        raise SourceError(f"{where}: {_failure(exc)}", True) from None
    try:
        document = json.loads(body)
    except ValueError:
        raise SourceError(f"{where}: the response is not JSON (cut short?)", True) from None
    records = _results_of(document, where)
    cache.store(request, body)
    PARSED.put(("page", request.cache_key()), records)
    return len(records), True


def page_records(request: PageRequest, cache: PageCache) -> list[Any]:
    """The records of one page: a slice of the file, or the cached API page."""
    if request.source.kind == "file":
        records = _file_records(request.source)
        start = (request.page - 1) * request.results
        return records[start:start + request.results]
    return cache.load(request)
