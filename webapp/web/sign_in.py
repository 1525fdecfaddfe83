"""Sign-in and sign-out pages."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.core.forms import FormInvalid, FormModel, parse_form, safe_next
from webapp.core.models import utcnow
from webapp.services import identity
from webapp.web import csrf
from webapp.web.rendering import render
from webapp.web.security import (
    Access,
    client_ip,
    guarded_route,
    session_cookie,
)


class SignInForm(FormModel):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=1024, strip_whitespace=False)]
    next: Annotated[str, StringConstraints(max_length=2000)] = "/"


def _form_page(request: Request, *, status_code: int = 200, error: str | None = None,
               errors: dict[str, str] | None = None, values: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> Response:
    values = values or {"next": safe_next(request.query_params.get("next"))}
    return render(request, "login.html", {"error": error, "errors": errors or {}, "values": values},
                  block="login_form", status_code=status_code, headers=headers)


async def login_page(request: Request) -> Response:
    """The sign-in form (already signed in: go on to `next`)."""
    if request.state.principal is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return _form_page(request)


async def login(request: Request) -> Response:
    """Check the credentials; on success open a fresh session and continue to `next`."""
    raw = await request.form()
    try:
        form = parse_form(SignInForm, raw)
    except FormInvalid as invalid:
        return _form_page(request, status_code=422, errors=invalid.errors, values=invalid.values)
    settings = request.app.state.settings
    previous = request.cookies.get(session_cookie(request))

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
            return token

    values = {"email": form.email, "next": form.next}
    outcome = await run_in_threadpool(attempt)
    if isinstance(outcome, identity.SignInThrottled):
        return _form_page(request, status_code=429, error=str(outcome), values=values,
                          headers={"Retry-After": str(outcome.retry_after)})
    if isinstance(outcome, identity.SignInError):
        return _form_page(request, status_code=422, error=str(outcome), values=values)
    token = outcome

    response = RedirectResponse(safe_next(form.next), status_code=303)
    response.set_cookie(
        session_cookie(request), token, max_age=settings.session_absolute_hours * 3600, path="/",
        httponly=True, samesite="lax", secure=settings.https,
    )
    csrf.rotate(request, token)  # bound to the new session
    return response


async def logout(request: Request) -> Response:
    """End this browser's session."""
    token = request.cookies.get(session_cookie(request))

    def end() -> None:
        with request.app.state.db.session() as session:
            identity.sign_out(session, token or "", request.state.principal)

    await run_in_threadpool(end)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(session_cookie(request), path="/", secure=request.app.state.settings.https)
    csrf.rotate(request, None)
    return response


routes = [
    guarded_route("/login", login_page, access=Access.public, name="login_page"),
    guarded_route("/login", login, access=Access.public, methods=["POST"]),
    guarded_route("/logout", logout, access=Access.member, methods=["POST"]),
]
