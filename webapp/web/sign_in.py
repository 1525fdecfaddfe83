"""Sign-in and sign-out pages."""

from __future__ import annotations

import logging
from typing import Annotated

from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.config import Settings
from webapp.core.emails import normalise_email
from webapp.core.forms import FormInvalid, FormModel, parse_form, safe_next
from webapp.core.models import utcnow
from webapp.services import identity
from webapp.services.audit import Action, record_event
from webapp.web import csrf
from webapp.web.oidc import oidc_client
from webapp.web.rendering import render
from webapp.web.security import (
    Access,
    client_ip,
    guarded_route,
    session_cookie,
    signed_in,
)

log = logging.getLogger(__name__)


class SignInForm(FormModel):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)]
    next: Annotated[str, StringConstraints(max_length=2000)] = "/"


def _form_page(request: Request, *, status_code: int = 200, error: str | None = None,
               errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
               headers: dict[str, str] | None = None, provider_logout: str | None = None) -> Response:
    settings = request.app.state.settings
    values = values or {"next": safe_next(request.query_params.get("next"))}
    return render(request, "login.html", {
        "error": error, "errors": errors or {}, "values": values, "oidc": settings.oidc_enabled,
        "provider_name": settings.oidc_provider_name, "passwords": settings.passwords_allowed,
        "break_glass": bool(settings.break_glass_email), "provider_logout": provider_logout,
        "signed_out": request.query_params.get("signed_out") == "1",
    }, block="login_form", status_code=status_code, headers=headers)


def break_glass(settings: Settings, email: str) -> bool:
    """Passwords are off and this is the one account that may still use one."""
    return (not settings.passwords_allowed and bool(settings.break_glass_email)
            and normalise_email(email) == normalise_email(settings.break_glass_email or ""))


async def login_page(request: Request) -> Response:
    """The sign-in form (already signed in: go on to `next`)."""
    if request.state.principal is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    provider_logout = None
    if request.query_params.get("signed_out") == "1" and request.app.state.settings.oidc_enabled:
        provider_logout = await oidc_client(request).end_session_url()
    return _form_page(request, provider_logout=provider_logout)


async def login(request: Request) -> Response:
    """Check the credentials; on success open a fresh session and continue to `next`."""
    raw = await request.form()
    try:
        form = parse_form(SignInForm, raw)
    except FormInvalid as invalid:
        return _form_page(request, status_code=422, errors=invalid.errors, values=invalid.values)
    settings = request.app.state.settings
    previous = request.cookies.get(session_cookie(request))
    glass = break_glass(settings, form.email)
    if not settings.passwords_allowed and not glass:
        return _form_page(request, status_code=403, values={"email": form.email, "next": form.next},
                          error=f"Password sign-in is off here: sign in with {settings.oidc_provider_name}.")

    def attempt() -> str | identity.SignInError:
        with request.app.state.db.session() as session:
            try:
                _principal, token = identity.sign_in(
                    session, settings, email=form.email, password=form.password, ip=client_ip(request),
                    user_agent=request.headers.get("user-agent", ""), now=utcnow(),
                )
            except identity.SignInError as refused:
                return refused  # returned, not raised: the failed attempt and its audit row commit
            if previous:
                identity.sign_out(session, previous, None)  # rotation: the old session id dies here
            if glass:
                record_event(session, actor=_principal.email, actor_id=_principal.id, action=Action.BREAK_GLASS,
                             subject=f"user:{_principal.id}", details={"ip": client_ip(request)})
                log.critical("break-glass sign-in", extra={"email": _principal.email, "ip": client_ip(request)})
            return token

    values = {"email": form.email, "next": form.next}
    outcome = await run_in_threadpool(attempt)
    if isinstance(outcome, identity.SignInThrottled):
        return _form_page(request, status_code=429, error=str(outcome), values=values,
                          headers={"Retry-After": str(outcome.retry_after)})
    if isinstance(outcome, identity.SignInError):
        return _form_page(request, status_code=422, error=str(outcome), values=values)
    token = outcome

    return signed_in(request, token, safe_next(form.next))


async def logout(request: Request) -> Response:
    """End this browser's session."""
    token = request.cookies.get(session_cookie(request))

    def end() -> None:
        with request.app.state.db.session() as session:
            identity.sign_out(session, token or "", request.state.principal)

    await run_in_threadpool(end)
    # With an identity provider, the sign-in page then offers to sign out there too.
    response = RedirectResponse("/login?signed_out=1" if request.app.state.settings.oidc_enabled else "/login",
                                status_code=303)
    response.delete_cookie(session_cookie(request), path="/", secure=request.app.state.settings.https)
    csrf.rotate(request, None)
    return response


routes = [
    guarded_route("/login", login_page, access=Access.public, name="login_page"),
    guarded_route("/login", login, access=Access.public, methods=["POST"]),
    guarded_route("/logout", logout, access=Access.member, methods=["POST"]),
]
