"""Cross-site request forgery: a state-changing request made with a cookie must prove it
comes from one of our pages, opened in this browser, in this session.

- The browser's own word first: a request whose `Sec-Fetch-Site` says it came from another
  site, or whose `Origin` is not ours, is refused before anything else.
- Then the signed double-submit token. The CSRF cookie holds "<nonce>.<mac>", the mac an
  HMAC over the nonce and a digest of the session cookie, so the pair is bound to one
  session: a cookie and token copied from another browser or session do not pass. The
  token comes back in the X-CSRF-Token header (htmx) or the csrf_token field (plain forms).
- Pages carry the token masked afresh in every response (a random pad XORed over it, as
  Django does), so compression cannot leak it next to a reflected value (BREACH). The
  cookie's own value is accepted too: it never appears in a page.

Requests authenticated with an API token (Authorization: Bearer) carry no ambient
credential and skip these checks (webapp.web.security).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "gh_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_COOKIE = "gh_session"
HOST_PREFIX = "__Host-"
# "<nonce>.<mac>": 32 URL-safe characters, then 32 hex digits; a masked token is the pad and
# the masked token (65 + 65 bytes) in URL-safe base64. Anything else is never compared.
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}\.[0-9a-f]{32}")
MASKED_SHAPE = re.compile(r"[A-Za-z0-9_-]{174}")
TOKEN_BYTES = 65
CROSS_SITE = "The request came from another site; Gatehouse takes changes only from its own pages."
EXPIRED = "The form has expired or did not come from this site. Reload the page and try again."


def cookie_name(name: str, *, secure: bool) -> str:
    """Under https both cookies carry the __Host- prefix: the browser then takes them only
    with Secure, Path=/ and no Domain, so no sibling subdomain can set or shadow them."""
    return HOST_PREFIX + name if secure else name


def _binding(session_cookie: str | None) -> str:
    """What a token is bound to: a digest of the session cookie ("" before signing in)."""
    return hashlib.sha256(session_cookie.encode()).hexdigest()[:32] if session_cookie else ""


def _mac(secret_key: str, nonce: str, binding: str) -> str:
    return hmac.new(secret_key.encode(), f"{nonce}|{binding}".encode(), hashlib.sha256).hexdigest()[:32]


def new_token(secret_key: str, session_cookie: str | None) -> str:
    nonce = secrets.token_urlsafe(24)
    return f"{nonce}.{_mac(secret_key, nonce, _binding(session_cookie))}"


def valid_token(secret_key: str, token: str | None, session_cookie: str | None) -> bool:
    """Ours, and bound to this session cookie."""
    if token is None or TOKEN_SHAPE.fullmatch(token) is None:
        return False
    nonce, _, mac = token.partition(".")
    return hmac.compare_digest(_mac(secret_key, nonce, _binding(session_cookie)).encode(), mac.encode())


def mask(token: str) -> str:
    """The token under a fresh random pad, for one page."""
    raw = token.encode()
    pad = secrets.token_bytes(len(raw))
    return base64.urlsafe_b64encode(pad + bytes(a ^ b for a, b in zip(pad, raw, strict=True))).decode().rstrip("=")


def unmask(sent: str) -> str | None:
    """The token under a mask made by `mask`, or None when `sent` is not one."""
    if MASKED_SHAPE.fullmatch(sent) is None:
        return None
    both = base64.urlsafe_b64decode(sent + "==")
    pad, masked = both[:TOKEN_BYTES], both[TOKEN_BYTES:]
    return bytes(a ^ b for a, b in zip(pad, masked, strict=True)).decode("ascii", errors="replace")


def _same_token(cookie: str, sent: str | None) -> bool:
    if sent is None:
        return False
    candidate = sent if TOKEN_SHAPE.fullmatch(sent) else unmask(sent)
    return candidate is not None and hmac.compare_digest(cookie.encode(), candidate.encode())


def check_origin(request: Request) -> None:
    """403 when the browser says the request came from elsewhere."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, CROSS_SITE)
    origin = request.headers.get("origin")
    if origin is None:
        return
    ours = {f"{request.url.scheme}://{request.url.netloc}", request.app.state.settings.base_url.rstrip("/")}
    if origin.rstrip("/") not in ours:
        raise HTTPException(403, CROSS_SITE)


async def check_token(request: Request) -> None:
    """403 unless the request carries this browser's session-bound token."""
    settings = request.app.state.settings
    cookie = request.cookies.get(cookie_name(CSRF_COOKIE, secure=settings.https), "")
    session = request.cookies.get(cookie_name(SESSION_COOKIE, secure=settings.https))
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        try:
            form = await request.form()
        except Exception as exc:  # malformed bodies are the client's fault
            raise HTTPException(400, "The form could not be read.") from exc
        field = form.get(CSRF_FIELD)
        sent = field if isinstance(field, str) else None
    if not (valid_token(settings.session_secret, cookie, session) and _same_token(cookie, sent)):
        raise HTTPException(403, EXPIRED)


class CSRFCookieMiddleware:
    """Makes sure every browser holds a token bound to its current session, and that
    templates can read it (masked per response by webapp.web.rendering)."""

    def __init__(self, app: ASGIApp, *, secret_key: str, secure: bool) -> None:
        self.app = app
        self.secret_key = secret_key
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = _cookie_from_scope(scope, cookie_name(CSRF_COOKIE, secure=self.secure))
        session = _cookie_from_scope(scope, cookie_name(SESSION_COOKIE, secure=self.secure))
        needs_cookie = not valid_token(self.secret_key, cookie, session)
        token = new_token(self.secret_key, session) if needs_cookie else cookie
        scope.setdefault("state", {})["csrf_token"] = token

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: dict[str, Any] = scope["state"]
                if needs_cookie or state.get("csrf_rotated"):
                    headers = MutableHeaders(scope=message)
                    headers.append("Set-Cookie", cookie_header(state["csrf_token"], secure=self.secure))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def cookie_header(token: str, *, secure: bool) -> str:
    name = cookie_name(CSRF_COOKIE, secure=secure)
    return f"{name}={token}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def rotate(request: Request, session_cookie: str | None) -> None:
    """A new token with a new session (or none): a token seen before is worthless after."""
    request.state.csrf_token = new_token(request.app.state.settings.session_secret, session_cookie)
    request.state.csrf_rotated = True


def _cookie_from_scope(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                found, _, cookie_value = part.strip().partition("=")
                if found == name:
                    return cookie_value
    return None
