"""A client cannot pick its own address with X-Forwarded-For: uvicorn believes forwarded
headers only from FORWARDED_ALLOW_IPS, which is empty by default. Real server processes,
because the forwarded headers are uvicorn's business, not the app's."""

from __future__ import annotations

from pathlib import Path

from support.processes import AppProcess, app_env
from webapp.config import Settings


def failed_sign_ins_from_rotating_addresses(server: AppProcess, count: int) -> list[int]:
    server.http.get("/login")  # the CSRF cookie
    statuses = []
    for n in range(count):
        answer = server.http.post("/login", data={"email": f"guess{n}@example.com", "password": "guess guess",
                                                  "csrf_token": server.http.cookies["gh_csrf"]},
                                  headers={"X-Forwarded-For": f"10.9.{n}.1"})
        statuses.append(answer.status_code)
    return statuses


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_listed(settings: Settings, tmp_path: Path) -> None:
    env = app_env(settings, LOGIN_ATTEMPTS_PER_IP="3")
    with (tmp_path / "app.log").open("w") as log:
        server = AppProcess(env, log, cwd=tmp_path)
        server.start()
        try:
            assert failed_sign_ins_from_rotating_addresses(server, 4) == [422, 422, 422, 429], \
                "all four come from 127.0.0.1, whatever the header says"
        finally:
            server.stop()
        trusting = AppProcess({**env, "FORWARDED_ALLOW_IPS": "127.0.0.1", "EXECUTOR_ID": "behind-proxy"}, log,
                              cwd=tmp_path)
        trusting.start()
        try:
            assert failed_sign_ins_from_rotating_addresses(trusting, 4) == [422] * 4, \
                "behind a listed proxy each forwarded address counts on its own"
        finally:
            trusting.stop()
