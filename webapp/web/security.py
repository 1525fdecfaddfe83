"""Authentication, authorization and CSRF, applied in one place: `guarded_route`.

Every route of the app is built with `guarded_route(path, endpoint, access=...)`. The
guard resolves who is asking (a session cookie, or `Authorization: Bearer` for scripts),
refuses the signed-out (303 to sign-in for pages, 401 for fragments and APIs), the
under-privileged and tokens without the scope a route needs (403), and on every
state-changing request made with a cookie checks its origin and its CSRF token
(webapp.web.csrf). Audit rows written while a token's request runs name the token
(webapp.services.audit.acting_through). Endpoints therefore never check roles
themselves; object-level rules (an approver deciding on their own request) live in the services.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from enum import StrEnum
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from webapp.core.models import TokenScope, utcnow
from webapp.services import identity, tokens
from webapp.services.access import viewer
from webapp.services.audit import acting_through
from webapp.services.request_table import count_waiting
from webapp.web import csrf
from webapp.web.csrf import SESSION_COOKIE, check_origin, check_token, cookie_name
from webapp.web.errors import error_response
from webapp.web.rendering import is_htmx, wants_fragment, wants_json, wants_stream

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

Endpoint = Callable[[Request], Awaitable[Response]]


class Access(StrEnum):
    """Who may call a route. Roles are ranked: admin > approver > member."""

    public = "public"
    member = "member"
    approver = "approver"
    admin = "admin"


def required_scope(method: str, access: Access) -> TokenScope:
    """The token scope a route needs: reading for safe methods; operating for admin changes;
    deciding for the rest (submitting, approving, rejecting, cancelling requests)."""
    if method in SAFE_METHODS:
        return TokenScope.read
    return TokenScope.operate if access is Access.admin else TokenScope.decide


def guarded_route(
    path: str, endpoint: Endpoint, *, access: Access, methods: Sequence[str] = ("GET",), name: str | None = None,
    browser_only: bool = False, signed: bool = False,
) -> Route:
    """A route that only `access` and above may call; with a token, only when the token
    carries the scope the method needs, and never when `browser_only` (managing tokens).
    `signed`: a public endpoint that authenticates each request by its signature (a webhook
    receiver), so browsers' CSRF checks do not apply."""
    assert not signed or access is Access.public, "a signed endpoint authenticates by its signature alone"
    async def guard(request: Request) -> Response:
        principal = await _authenticate(request)
        request.state.principal = principal
        if access is not Access.public:
            if principal is None:
                return _sign_in_required(request)
            if not principal.has_role(access.value):
                raise HTTPException(403, "Your role does not allow this.")
        if principal is not None and principal.via_token:
            if browser_only:
                raise HTTPException(403, "This is done from a signed-in browser, not with an API token.")
            scope = required_scope(request.method, access)
            if not principal.has_scope(scope):
                raise HTTPException(403, f"This API token lacks the {scope} scope.")
            with acting_through(principal.token_id):
                return await endpoint(request)
        if request.method not in SAFE_METHODS and not signed:  # a signed endpoint checks its own HMAC
            check_origin(request)
            await check_token(request)
        if principal is None:
            return await endpoint(request)
        with acting_through(None, "web"):
            return await endpoint(request)

    guard.access = access  # type: ignore[attr-defined]
    guard.browser_only = browser_only  # type: ignore[attr-defined]
    guard.__name__ = endpoint.__name__
    guard.__doc__ = endpoint.__doc__
    return Route(path, guard, methods=list(methods), name=name or endpoint.__name__)


def session_cookie(request: Request) -> str:
    """The session cookie's name for this app (prefixed under https)."""
    return cookie_name(SESSION_COOKIE, secure=request.app.state.settings.https)


def signed_in(request: Request, token: str, next_url: str) -> Response:
    """Hand the browser its new session (by password or through the identity provider) and go on."""
    settings = request.app.state.settings
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        session_cookie(request), token, max_age=settings.session_absolute_hours * 3600, path="/",
        httponly=True, samesite="lax", secure=settings.https,
    )
    csrf.rotate(request, token)  # bound to the new session
    return response


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
                return tokens.principal_for_token(session, secret, now=utcnow())

        principal = await run_in_threadpool(by_token)
        if principal is None:
            raise HTTPException(401, "The API token is unknown, expired or revoked.", {"WWW-Authenticate": "Bearer"})
        return principal

    token = request.cookies.get(session_cookie(request))
    if not token or len(token) > 128:
        return None

    whole_page = (request.method == "GET" and not wants_fragment(request) and not wants_json(request)
                  and not wants_stream(request))

    def by_session() -> identity.Principal | None:
        with request.app.state.db.session() as session:
            principal = identity.principal_for_session(session, settings, token, now=utcnow())
            if whole_page and principal is not None and principal.has_role("approver"):
                # The count beside "Waiting for me" in the header, read in the same visit.
                request.state.pending_count = count_waiting(session, viewer(session, principal))
            return principal

    return await run_in_threadpool(by_session)


def _sign_in_required(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    login = f"/login?next={quote(target, safe='')}"
    if wants_stream(request):  # an EventSource given a 401 stops, instead of reconnecting to a login page
        return PlainTextResponse("Sign in to continue.", 401)
    if wants_json(request) or wants_fragment(request):
        headers = {"HX-Redirect": login} if is_htmx(request) else {"WWW-Authenticate": 'Bearer realm="gatehouse"'}
        return error_response(request, 401, "Sign in to continue.", headers)
    return RedirectResponse(login, status_code=303)
