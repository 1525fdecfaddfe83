"""A real SCIM 2.0 server on loopback: the `scim2-server` command (PyPI package scim2-server,
in-memory storage) in its own process, with a bearer token, for the SCIM agent's tests.
Users and groups are made through its own SCIM API, as an identity provider would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from support.receivers import free_port, wait_until_listening

SCIM_JSON = "application/scim+json"


class ScimServer:
    def __init__(self, token: str = "scim-test-token") -> None:
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ScimServer:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        command = [str(Path(sys.executable).with_name("scim2-server")), "--hostname", "127.0.0.1",
                   "--port", str(self.port), "--bearer-token", self.token]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_until_listening(self.port, self.proc, lambda: "scim2-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)
            self.proc = None

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=5, headers={"Authorization": f"Bearer {self.token}",
                                                                    "Content-Type": SCIM_JSON})

    def add_user(self, email: str, name: str) -> str:
        with self._http() as http:
            answer = http.post("/Users", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                               "userName": email, "displayName": name,
                                               "emails": [{"value": email, "primary": True}]})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def add_group(self, name: str, members: list[str] | None = None) -> str:
        with self._http() as http:
            answer = http.post("/Groups", json={"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                                                "displayName": name,
                                                "members": [{"value": m} for m in members or []]})
        answer.raise_for_status()
        return str(answer.json()["id"])

    def members(self, group_id: str) -> set[str]:
        with self._http() as http:
            answer = http.get(f"/Groups/{group_id}")
        answer.raise_for_status()
        return {m["value"] for m in answer.json().get("members") or []}

    def agent_config(self, **extra: Any) -> dict[str, Any]:
        return {"url": self.url, "token_env": "GATEHOUSE_AGENT_TEST_SCIM_TOKEN", **extra}
