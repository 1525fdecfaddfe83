"""Read a server-sent event stream through the TestClient, in a thread, failing rather than
hanging when the expected events do not come."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.testclient import TestClient


@dataclass
class Event:
    name: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None

    @property
    def text(self) -> str:
        return "\n".join(self.data)


def read_stream(client: TestClient, url: str, *, until: Callable[[list[Event]], bool],
                headers: dict[str, str] | None = None, timeout: float = 10.0) -> list[Event]:
    """Events from `url` until `until(events)` is true or the server ends the stream."""
    found: list[Event] = []
    error: list[BaseException] = []

    def consume() -> None:
        try:
            with client.stream("GET", url, headers=headers or {}) as response:
                assert response.status_code == 200, response.read()
                assert response.headers["content-type"].startswith("text/event-stream")
                current = Event()
                for line in response.iter_lines():
                    if line.startswith("event:"):
                        current.name = line[6:].strip()
                    elif line.startswith("data:"):
                        current.data.append(line[5:].removeprefix(" "))
                    elif line.startswith("id:"):
                        current.id = line[3:].strip()
                    elif line == "" and (current.data or current.id is not None or current.name != "message"):
                        found.append(current)
                        current = Event()
                        if until(found):
                            return
        except BaseException as exc:  # noqa: BLE001 - reported to the test thread
            error.append(exc)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    thread.join(timeout)
    if error:
        raise error[0]
    assert not thread.is_alive(), f"{url}: timed out after {timeout} s with {[e.name for e in found]}"
    return found
