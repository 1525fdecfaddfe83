"""API tokens in the browser: `/account/tokens`, where each person issues and revokes their
own, and the issuing and listing the admin's person page shares for service accounts
(webapp/web/admin/users.py). The rules live in webapp/services/tokens.py; tokens are
managed from a signed-in browser only, never with another token."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import StringConstraints
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from webapp.core.forms import FormInvalid, FormModel, parse_form
from webapp.core.models import ApiToken, TokenScope, User, utcnow
from webapp.services import tokens
from webapp.services.identity import Principal
from webapp.web.database import in_session, row_or_404
from webapp.web.flash import redirect_with
from webapp.web.parsing import path_id
from webapp.web.rendering import render
from webapp.web.security import Access, current_principal, guarded_route

SCOPE_TEXT = {
    TokenScope.read: "read every page and JSON answer you can see",
    TokenScope.decide: "submit, approve, reject and cancel requests as you",
    TokenScope.operate: "admin and ops changes (people, resources, grants, imports, workflows)",
}
PAGE = "/account/tokens"


class TokenForm(FormModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
    days: int


def scope_choices(user: User) -> list[tuple[str, str]]:
    allowed = tokens.scopes_for(user)
    return [(scope.value, text) for scope, text in SCOPE_TEXT.items() if scope.value in allowed]


def token_context(request: Request, user: User, listed: list[ApiToken]) -> dict[str, Any]:
    """What _tokens.html's macros need, for `user`'s tokens."""
    return {"tokens": listed, "scopes": scope_choices(user), "max_days": request.app.state.settings.token_max_days,
            "now": utcnow()}


class IssueRefused(Exception):
    """The form or a token rule said no: the status, the banner and the fields to fix."""

    def __init__(self, status_code: int, error: str | None, errors: dict[str, str], values: dict[str, Any]) -> None:
        super().__init__(error or "")
        self.status_code, self.error, self.errors, self.values = status_code, error, errors, values


async def issue_from_form(request: Request, user_id: int) -> str:
    """Issue a token for `user_id` from the posted form, as the signed-in person; the
    secret, or IssueRefused."""
    principal = current_principal(request)
    raw: FormData = await request.form()
    scopes = [value for value in raw.getlist("scopes") if isinstance(value, str)]
    values: dict[str, Any] = {"name": raw.get("name", ""), "days": raw.get("days", ""), "scopes": scopes}
    try:
        form = parse_form(TokenForm, raw)
    except FormInvalid as invalid:
        raise IssueRefused(422, None, invalid.errors, values) from None
    max_days = request.app.state.settings.token_max_days

    def issue(session: Session) -> str:
        user = row_or_404(session, User, user_id)
        return tokens.issue_token(session, user=user, issued_by=principal, now=utcnow(), name=form.name,
                                  scopes=scopes, days=form.days, max_days=max_days)[1]

    try:
        return await in_session(request, issue)
    except tokens.TokenRefused as refused:
        if refused.field:
            raise IssueRefused(422, None, {refused.field: str(refused)}, values) from None
        raise IssueRefused(refused.status_code, str(refused), {}, values) from None


async def revoke_one(request: Request, user_id: int, token_id: int) -> None:
    """Revoke `user_id`'s token `token_id` (404 when it is someone else's)."""
    principal = current_principal(request)

    def revoke(session: Session) -> None:
        token = row_or_404(session, ApiToken, token_id)
        if token.user_id != user_id:
            raise HTTPException(404, f"No api token with id {token_id}.")
        if token.revoked_at is None:
            tokens.revoke_token(session, token, revoked_by=principal, now=utcnow())

    await in_session(request, revoke)


# The person's own tokens -------------------------------------------------------------------

async def _page(request: Request, principal: Principal, *, status_code: int = 200, new_secret: str | None = None,
                error: str | None = None, errors: dict[str, str] | None = None,
                values: dict[str, Any] | None = None) -> Response:
    def load(session: Session) -> tuple[User, list[ApiToken]]:
        return row_or_404(session, User, principal.id), tokens.tokens_of(session, principal.id)

    user, listed = await in_session(request, load)
    context = {**token_context(request, user, listed), "new_secret": new_secret, "error": error,
               "errors": errors or {}, "values": values or {}}
    response = render(request, "account_tokens.html", context, block="tokens", status_code=status_code)
    if new_secret:
        response.headers["Cache-Control"] = "no-store"
    return response


async def tokens_page(request: Request) -> Response:
    """Your API tokens: what each may do, when it expires, when it was last used."""
    return await _page(request, current_principal(request))


async def issue_own(request: Request) -> Response:
    """Issue yourself a token; its secret is on this response only."""
    principal = current_principal(request)
    try:
        secret = await issue_from_form(request, principal.id)
    except IssueRefused as refused:
        return await _page(request, principal, status_code=refused.status_code, error=refused.error,
                           errors=refused.errors, values=refused.values)
    return await _page(request, principal, status_code=201, new_secret=secret)


async def revoke_own(request: Request) -> Response:
    principal = current_principal(request)
    await revoke_one(request, principal.id, path_id(request, "token_id", "token"))
    return redirect_with(request, PAGE, "Token revoked.")


routes = [
    guarded_route(PAGE, tokens_page, access=Access.member, browser_only=True),
    guarded_route(PAGE, issue_own, access=Access.member, methods=["POST"], browser_only=True),
    guarded_route(PAGE + "/{token_id:int}/revoke", revoke_own, access=Access.member, methods=["POST"],
                  browser_only=True),
]
