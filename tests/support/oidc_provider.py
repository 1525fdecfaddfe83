"""A real OpenID Connect provider on loopback: panva's certified `oidc-provider` (npm, pinned in
tests/support/oidc/package.json) run by tests/support/oidc/provider.mjs, so that sign-in through
OIDC is tested against the real protocol, not a mock. Accounts live in a JSON file the provider
re-reads at every sign-in; `sign_in_headless` drives its own login page with plain HTTP."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from support.receivers import free_port

OIDC_DIR = Path(__file__).resolve().parent / "oidc"
START_SECONDS = 20.0


def available() -> bool:
    """Whether the provider can run here: node, and `oidc-provider` installed by `install()`."""
    return shutil.which("node") is not None and (OIDC_DIR / "node_modules" / "oidc-provider" / "package.json").is_file()


def install() -> None:
    """Install the pinned provider from package-lock.json (for CI), unless already there."""
    if (OIDC_DIR / "node_modules").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not installed: cannot install the test OpenID provider")
    subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=OIDC_DIR, check=True)


class OpenIdProvider:
    """`node provider.mjs` in its own process, with its config, accounts and log in `tmp_path`.

    `clients` are client metadata ({client_id, client_secret, redirect_uris,
    post_logout_redirect_uris}; token_endpoint_auth_method defaults to client_secret_basic);
    `accounts` maps a login to the claims of its ID token."""

    def __init__(self, tmp_path: Path, clients: list[dict[str, Any]], accounts: dict[str, dict[str, Any]],
                 id_token_ttl: int | None = None) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.accounts_file = tmp_path / "oidc-accounts.json"
        self.config_file = tmp_path / "oidc-config.json"
        self.log_file = tmp_path / "oidc-provider.log"
        self._accounts = dict(accounts)
        self._config: dict[str, Any] = {
            "port": self.port, "issuer": self.issuer, "clients": clients,
            "accounts_file": str(self.accounts_file), "id_token_ttl": id_token_ttl,
        }
        self.discovery: dict[str, Any] = {}
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> OpenIdProvider:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self._write_accounts()
        self.config_file.write_text(json.dumps(self._config, indent=2))
        with self.log_file.open("wb") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([shutil.which("node") or "node", "provider.mjs", str(self.config_file)],
                                         cwd=OIDC_DIR, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_SECONDS
        while f"listening {self.issuer}" not in self.log():
            if self.proc.poll() is not None:
                raise RuntimeError(f"the OpenID provider exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the OpenID provider did not start in {START_SECONDS:g} s:\n{self.log()}")
            time.sleep(0.05)
        with httpx.Client(timeout=10) as http:
            answer = http.get(f"{self.issuer}/.well-known/openid-configuration")
        answer.raise_for_status()
        self.discovery = answer.json()

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        """What the provider printed so far (its warnings and errors), for failure messages."""
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def set_account(self, account_id: str, claims: dict[str, Any]) -> None:
        """Add or change an account; the next sign-in (and token exchange) sees the new claims."""
        self._accounts[account_id] = claims
        self._write_accounts()

    def remove_account(self, account_id: str) -> None:
        """Remove an account: its next sign-in is refused."""
        self._accounts.pop(account_id, None)
        self._write_accounts()

    def _write_accounts(self) -> None:
        # Replace the file in one step, so the provider never reads half of it.
        partial = self.accounts_file.with_suffix(".tmp")
        partial.write_text(json.dumps(self._accounts, indent=2))
        os.replace(partial, self.accounts_file)


class LoginRefused(AssertionError):
    """The provider did not accept the login (e.g. an account not in the accounts file)."""


class _Forms(HTMLParser):
    """The forms of a page (action, method and inputs) and the text of its alerts."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.alerts: list[str] = []
        self._in_alert = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form":
            self.forms.append({"action": attributes.get("action", ""),
                               "method": attributes.get("method", "get").lower(), "inputs": []})
        elif tag == "input" and self.forms and attributes.get("name"):
            self.forms[-1]["inputs"].append(attributes)
        self._in_alert = attributes.get("role") == "alert"

    def handle_endtag(self, tag: str) -> None:
        self._in_alert = False

    def handle_data(self, data: str) -> None:
        if self._in_alert and data.strip():
            self.alerts.append(data.strip())


def _browse(authorize_url: str, act: Callable[[httpx.Client, httpx.Response], httpx.Response]) -> str:
    """Open the authorize URL as a browser without JavaScript would, follow the provider's own
    redirects, let `act` answer each page it shows, and return the first URL it sends the
    browser to outside itself (the relying party's redirect URI), without requesting it."""
    provider = urlsplit(authorize_url)[:2]
    with httpx.Client(timeout=10, follow_redirects=False) as browser:
        answer = browser.get(authorize_url)
        for _ in range(20):
            if not answer.is_redirect:
                answer = act(browser, answer)
                continue
            target = urljoin(str(answer.url), answer.headers["location"])
            if urlsplit(target)[:2] != provider:
                return target
            answer = browser.get(target)
    raise AssertionError(f"the provider redirected too many times, last at {answer.url}")


def sign_in_headless(authorize_url: str, login: str, password: str = "any") -> str:
    """Sign in at the provider through its own login form; returns the redirect URI it sends the
    browser back to (with `code` and `state`). LoginRefused if it shows the form again instead."""
    submitted = False

    def fill_in(browser: httpx.Client, answer: httpx.Response) -> httpx.Response:
        nonlocal submitted
        page = _Forms()
        page.feed(answer.text)
        login_forms = [f for f in page.forms if any(i.get("type") == "password" for i in f["inputs"])]
        if submitted and login_forms:
            why = "; ".join(page.alerts) or f"HTTP {answer.status_code}"
            raise LoginRefused(f"the OpenID provider refused login {login!r}: {why}")
        if not login_forms:
            raise AssertionError(f"expected the provider's login form at {answer.url}, got HTTP "
                                 f"{answer.status_code}:\n{answer.text[:2000]}")
        form = login_forms[0]
        fields: dict[str, str] = {}
        for field in form["inputs"]:
            kind = field.get("type", "text")
            fields[field["name"]] = password if kind == "password" else login if kind in ("text", "email") \
                else field.get("value", "")
        action = urljoin(str(answer.url), form["action"])
        submitted = True
        return browser.post(action, data=fields) if form["method"] == "post" else browser.get(action, params=fields)

    return _browse(authorize_url, fill_in)


def cancel_headless(authorize_url: str) -> str:
    """Press the provider's Cancel link instead of signing in; returns where the provider then
    sends the browser (the redirect URI, with error=access_denied)."""
    def cancel(browser: httpx.Client, answer: httpx.Response) -> httpx.Response:
        aborts = re.findall(r'href="([^"]*/abort[^"]*)"', answer.text)
        if not aborts:
            raise AssertionError(f"no cancel link on the provider's page at {answer.url}")
        return browser.get(urljoin(str(answer.url), aborts[0]))

    return _browse(authorize_url, cancel)
