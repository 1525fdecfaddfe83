"""`/account`: a person's own settings. Today the time zone the pages show times in; empty
follows the browser (static/app.js tells the server its zone), else UTC."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints, field_validator
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.core.forms import FormInvalid, FormModel, parse_form
from webapp.core.models import User, utcnow
from webapp.services.audit import Action, record_event
from webapp.web.database import in_session
from webapp.web.flash import redirect_with
from webapp.web.rendering import render, wants_json
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.times import browser_zone_name, exact, zone, zone_names

PAGE = "/account"


class SettingsForm(FormModel):
    time_zone: Annotated[str, StringConstraints(max_length=64)] = ""

    @field_validator("time_zone")
    @classmethod
    def _known(cls, name: str) -> str:
        if name and name not in zone_names():
            raise ValueError("Choose a time zone from the list.")
        return name


def _page(request: Request, values: dict[str, str], errors: dict[str, str] | None = None,
          status_code: int = 200) -> Response:
    browser = browser_zone_name(request.cookies)
    return render(request, "account.html", {
        "values": values, "errors": errors or {}, "browser_zone": browser,
        "zones": [("", "As my browser says (else UTC)")] + [(z, z) for z in sorted(zone_names())],
        "sample": exact(utcnow(), zone(values.get("time_zone") or browser)),
    }, status_code=status_code)


async def account_page(request: Request) -> Response:
    """Who you are, and your settings."""
    principal = current_principal(request)
    if wants_json(request):
        return JSONResponse({"email": principal.email, "name": principal.name, "role": principal.role,
                             "time_zone": principal.time_zone})
    return _page(request, {"time_zone": principal.time_zone})


async def save_settings(request: Request) -> Response:
    """Save the person's settings; a name this machine does not know is refused (422)."""
    principal = current_principal(request)
    try:
        form = parse_form(SettingsForm, await request.form())
    except FormInvalid as invalid:
        if wants_json(request):
            raise
        return _page(request, invalid.values, invalid.errors, status_code=422)

    def save(session: Session) -> None:
        user = session.get(User, principal.id)
        assert user is not None
        if user.time_zone != form.time_zone:
            record_event(session, actor=principal.email, actor_id=principal.id, action=Action.ACCOUNT_UPDATED,
                         subject=f"user:{principal.id}", details={"time_zone": form.time_zone})
            user.time_zone = form.time_zone

    await in_session(request, save)
    if wants_json(request):
        return JSONResponse({"time_zone": form.time_zone})
    return redirect_with(request, PAGE, "Settings saved: times now show in "
                         + (form.time_zone or "your browser's time zone") + ".")


routes = [
    guarded_route(PAGE, account_page, access=Access.member),
    guarded_route(PAGE, save_settings, access=Access.member, methods=["POST"]),
]
