"""Authentication, authorization and CSRF, applied in one place: `guarded_route`.

Every route of the app is built with `guarded_route(path, endpoint, access=...)`. The
guard resolves who is asking (a session cookie, or `Authorization: Bearer` for scripts),
refuses the signed-out (303 to sign-in for pages, 401 for fragments and APIs) and the
under-privileged (403), and checks the CSRF token on every state-changing request made
with a cookie. Endpoints therefore never check roles themselves; object-level rules
(an approver deciding on their own request) live in the services.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from webapp.core.models import utcnow
from webapp.services import identity
from webapp.web.errors import error_response
from webapp.web.rendering import is_htmx, wants_fragment, wants_json

SESSION_COOKIE = "gh_session"
CSRF_COOKIE = "gh_csrf"
# Under https both carry the __Host- prefix: the browser then takes them only with Secure,
# Path=/ and no Domain, so no sibling subdomain can set or shadow them.
HOST_PREFIX = "__Host-"


def cookie_name(name: str, *, secure: bool) -> str:
    return HOST_PREFIX + name if secure else name


def session_cookie(request: Request) -> str:
    """The session cookie's name for this app (prefixed under https)."""
    return cookie_name(SESSION_COOKIE, secure=request.app.state.settings.https)
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response]]


class Access(StrEnum):
    """Who may call a route. Roles are ranked: admin > approver > member."""

    public = "public"
    member = "member"
    approver = "approver"
    admin = "admin"


def guarded_route(
    path: str, endpoint: Endpoint, *, access: Access, methods: Sequence[str] = ("GET",), name: str | None = None
) -> Route:
    async def guard(request: Request) -> Response:
        principal = await _authenticate(request)
        request.state.principal = principal
        if access is not Access.public:
            if principal is None:
                return _sign_in_required(request)
            if not principal.has_role(access.value):
                raise HTTPException(403, "Your role does not allow this.")
        if request.method not in SAFE_METHODS and not (principal and principal.via_token):
            await _check_csrf(request)
        return await endpoint(request)

    guard.access = access  # type: ignore[attr-defined]
    guard.__name__ = endpoint.__name__
    guard.__doc__ = endpoint.__doc__
    return Route(path, guard, methods=list(methods), name=name or endpoint.__name__)


def current_principal(request: Request) -> identity.Principal:
    """The signed-in principal of a guarded, non-public route."""
    principal: identity.Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # pragma: no cover - the guard makes this unreachable
        raise HTTPException(401)
    return principal


def client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _authenticate(request: Request) -> identity.Principal | None:
    settings = request.app.state.settings
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        secret = authorization[7:].strip()

        def by_token() -> identity.Principal | None:
            with request.app.state.db.session() as session:
                return identity.principal_for_token(session, secret, now=utcnow())

        principal = await run_in_threadpool(by_token)
        if principal is None:
            raise HTTPException(401, "The API token is unknown or revoked.", {"WWW-Authenticate": "Bearer"})
        return principal

    token = request.cookies.get(session_cookie(request))
    if not token or len(token) > 128:
        return None

    def by_session() -> identity.Principal | None:
        with request.app.state.db.session() as session:
            return identity.principal_for_session(session, settings, token, now=utcnow())

    return await run_in_threadpool(by_session)


def _sign_in_required(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = f"/login?next={quote(target, safe='')}"
    if wants_json(request) or wants_fragment(request):
        headers = {"HX-Redirect": login} if is_htmx(request) else {"WWW-Authenticate": 'Bearer realm="gatehouse"'}
        return error_response(request, 401, "Sign in to continue.", headers)
    return RedirectResponse(login, status_code=303)


# CSRF --------------------------------------------------------------------------------------

# A CSRF token is "<nonce>.<mac>": 32 URL-safe characters, then 32 hex digits. Anything else
# (other characters, other lengths, non-ASCII) is not a token, and is never compared.
CSRF_TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32}\.[0-9a-f]{32}")


def _sign(secret_key: str, nonce: str) -> str:
    mac = hmac.new(secret_key.encode(), nonce.encode(), hashlib.sha256).hexdigest()[:32]
    return f"{nonce}.{mac}"


def _is_token(value: str | None) -> bool:
    return value is not None and CSRF_TOKEN_SHAPE.fullmatch(value) is not None


def _valid_token(secret_key: str, token: str) -> bool:
    if not _is_token(token):
        return False
    nonce, _, _mac = token.partition(".")
    return hmac.compare_digest(_sign(secret_key, nonce).encode(), token.encode())


def new_csrf_token(secret_key: str) -> str:
    return _sign(secret_key, secrets.token_urlsafe(24))


async def _check_csrf(request: Request) -> None:
    """The token in the cookie must come back in the X-CSRF-Token header (htmx) or the
    csrf_token form field (plain forms), and carry our signature."""
    cookie = request.cookies.get(cookie_name(CSRF_COOKIE, secure=request.app.state.settings.https), "")
    secret_key = request.app.state.settings.session_secret
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
    matches = _is_token(sent) and hmac.compare_digest(cookie.encode(), sent.encode())  # type: ignore[union-attr]
    if not (_valid_token(secret_key, cookie) and matches):
        raise HTTPException(403, "The form has expired or did not come from this site. Reload the page and try again.")


class CSRFCookieMiddleware:
    """Makes sure every browser holds a signed CSRF token and that templates can read it."""

    def __init__(self, app: ASGIApp, *, secret_key: str, secure: bool) -> None:
        self.app = app
        self.secret_key = secret_key
        self.secure = secure

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = _cookie_from_scope(scope, cookie_name(CSRF_COOKIE, secure=self.secure))
        needs_cookie = not (cookie and _valid_token(self.secret_key, cookie))
        token = new_csrf_token(self.secret_key) if needs_cookie else cookie
        scope.setdefault("state", {})["csrf_token"] = token

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                state: dict[str, Any] = scope["state"]
                if needs_cookie or state.get("csrf_rotated"):
                    headers = MutableHeaders(scope=message)
                    headers.append("Set-Cookie", csrf_cookie_header(state["csrf_token"], secure=self.secure))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def csrf_cookie_header(token: str, *, secure: bool) -> str:
    name = cookie_name(CSRF_COOKIE, secure=secure)
    return f"{name}={token}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")


def rotate_csrf_token(request: Request) -> None:
    """A new CSRF token with a new session: a token seen before sign-in is worthless after."""
    request.state.csrf_token = new_csrf_token(request.app.state.settings.session_secret)
    request.state.csrf_rotated = True


def _cookie_from_scope(scope: Scope, name: str) -> str | None:
    for key, value in scope["headers"]:
        if key == b"cookie":
            for part in value.decode("latin-1").split(";"):
                cookie_name, _, cookie_value = part.strip().partition("=")
                if cookie_name == name:
                    return cookie_value
    return None
