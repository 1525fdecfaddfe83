"""Sign-in through the company's OpenID Connect provider (authorization code flow with PKCE).

    GET /login/oidc?next=   a fresh state, nonce and PKCE verifier (a row, and the state in a
                            cookie for this browser), then off to the provider's login page
    GET /auth/callback      back from the provider: the state must be this browser's and unused;
                            the code is exchanged for tokens, the ID token checked, the person
                            created or updated from its claims, and a session opened

What is checked and why: webapp.services.oidc; talking to the provider:
webapp.services.oidc_client. A refusal answers with a page saying why (webapp.web.errors).
"""

from __future__ import annotations

from joserfc.errors import JoseError
from joserfc.jws import extract_compact
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.core.forms import safe_next
from webapp.core.models import utcnow
from webapp.services import identity
from webapp.services.oidc import OidcRefused, begin_login, sign_in_person, take_login, verified_claims
from webapp.services.oidc_client import CALLBACK_PATH, OidcClient
from webapp.web.csrf import cookie_name
from webapp.web.database import in_session
from webapp.web.security import Access, client_ip, guarded_route, session_cookie, signed_in

STATE_COOKIE = "gh_oidc_state"


def oidc_client(request: Request) -> OidcClient:
    """The app's client for its provider (404 when sign-in through a provider is not set up)."""
    settings = request.app.state.settings
    if not settings.oidc_enabled:
        raise HTTPException(404, "Sign-in through an identity provider is not set up here.")
    client: OidcClient | None = getattr(request.app.state, "oidc_client", None)
    if client is None:
        client = request.app.state.oidc_client = OidcClient(settings)
    return client


def _state_cookie(request: Request) -> str:
    return cookie_name(STATE_COOKIE, secure=request.app.state.settings.https)


async def start(request: Request) -> Response:
    """Leave for the provider's login page; come back to `next`."""
    client = oidc_client(request)
    next_url = safe_next(request.query_params.get("next"))
    login = await in_session(request, lambda s: begin_login(s, next_url, now=utcnow()))
    response = RedirectResponse(await client.authorization_url(login), status_code=303)
    # Binds the trip to this browser: a code and state pasted into someone else's browser fail.
    response.set_cookie(_state_cookie(request), login.state, max_age=600, path=CALLBACK_PATH, httponly=True,
                        samesite="lax", secure=request.app.state.settings.https)
    return response


async def callback(request: Request) -> Response:
    """Back from the provider: sign the person in, or say why not."""
    client = oidc_client(request)
    settings = request.app.state.settings
    state = request.query_params.get("state", "")
    now = utcnow()
    login = await in_session(request, lambda s: take_login(s, state, now=now))  # once only, even if refused below
    if request.cookies.get(_state_cookie(request)) != login.state:
        raise OidcRefused("This sign-in did not start in this browser. Sign in again from here.")
    if "error" in request.query_params:
        error = request.query_params["error"][:100]
        raise OidcRefused(f"Your identity provider did not sign you in ({error}). Ask an admin if you should have "
                          "access to Gatehouse.", 403)
    code = request.query_params.get("code", "")
    if not code or len(code) > 2000:
        raise OidcRefused("The identity provider sent no sign-in code. Sign in again.")
    tokens = await client.exchange(code, login)
    id_token = str(tokens["id_token"])
    try:
        kid = extract_compact(id_token.encode()).protected.get("kid")
    except (JoseError, ValueError) as error:
        raise OidcRefused("The identity provider's answer is not a signed token.") from error
    claims = verified_claims(id_token, await client.keys(kid), issuer=client.issuer,
                             client_id=str(settings.oidc_client_id), nonce=login.nonce, now=now,
                             leeway=settings.oidc_clock_skew_seconds)
    previous = request.cookies.get(session_cookie(request))

    def sign_in(session: Session) -> str:
        _user, token = sign_in_person(session, settings, claims, ip=client_ip(request),
                                      user_agent=request.headers.get("user-agent", ""), now=now)
        if previous:
            identity.sign_out(session, previous, None)  # rotation: the old session id dies here
        return token

    token = await in_session(request, sign_in)
    response = signed_in(request, token, login.next_url)
    response.delete_cookie(_state_cookie(request), path=CALLBACK_PATH, secure=settings.https)
    return response


routes = [
    guarded_route("/login/oidc", start, access=Access.public),
    guarded_route(CALLBACK_PATH, callback, access=Access.public),
]
