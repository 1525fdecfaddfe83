"""Admin pages for people: find and add them, change their role, (de)activate them, and
revoke their API tokens (and issue those of service accounts). The rules (the last admin
stays; tokens are personal) live in webapp.services.accounts and webapp.services.tokens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.core.forms import FormInvalid, FormModel, parse_form, parse_query
from webapp.core.models import ApiToken, Role, User
from webapp.core.passwords import MIN_PASSWORD_LENGTH
from webapp.services import accounts, tokens
from webapp.services.identity import Principal
from webapp.web.database import in_session, row_or_404
from webapp.web.flash import redirect_with
from webapp.web.parsing import path_id
from webapp.web.rendering import render
from webapp.web.security import Access, current_principal, guarded_route
from webapp.web.tokens import IssueRefused, issue_from_form, revoke_one, token_context

PAGE_SIZE = 50
F = TypeVar("F", bound=FormModel)
Text = Annotated[str, StringConstraints(max_length=100)]


class NewUserForm(FormModel):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    department: Text = ""
    title: Text = ""
    role: Role = Role.member
    service: bool = False
    password: Annotated[str, StringConstraints(max_length=1024, strip_whitespace=False)] = ""

    @field_validator("password")
    @classmethod
    def _long_enough(cls, value: str) -> str:
        if value and len(value) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"Use at least {MIN_PASSWORD_LENGTH} characters, or leave it empty.")
        return value


class UserSearch(FormModel):
    q: Annotated[str, StringConstraints(max_length=100)] = ""
    page: int = Field(default=1, ge=1, le=10_000)


class RoleForm(FormModel):
    role: Role


class ActiveForm(FormModel):
    active: bool


# People ------------------------------------------------------------------------------------

async def users_page(request: Request) -> Response:
    """Everyone who can sign in or be granted access; search and add people."""
    return await _users_response(request)


async def _users_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                          values: dict[str, Any] | None = None, error: str | None = None) -> Response:
    search = parse_query(UserSearch, request.query_params)
    text, page = search.q, search.page
    users, total = await in_session(
        request, lambda s: accounts.search_users(s, text=text, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE))
    context = {
        "users": users, "total": total, "q": text, "page": page, "pages": max(1, -(-total // PAGE_SIZE)),
        "roles": list(Role), "errors": errors or {}, "values": values or {"role": "member"}, "error": error,
    }
    return render(request, "admin_users.html", context, block="users_table", status_code=status_code)


async def create_user(request: Request) -> Response:
    """Add a person; without a password they can be granted access but not sign in."""
    principal = current_principal(request)
    try:
        form = parse_form(NewUserForm, await request.form())
    except FormInvalid as invalid:
        return await _users_response(request, status_code=422, errors=invalid.errors, values=invalid.values)

    def create(session: Session) -> None:
        accounts.create_user(session, email=form.email, name=form.name, password=form.password or None,
                             role=form.role, department=form.department, title=form.title, actor=principal.email,
                             service=form.service)

    try:
        await in_session(request, create)
    except accounts.AccountError as refused:
        values = form.model_dump(exclude={"password"})
        return await _users_response(request, status_code=422, error=str(refused), values=values)
    return RedirectResponse("/admin/users", status_code=303)


async def user_page(request: Request) -> Response:
    """One person: role, activation and API tokens."""
    return await _user_response(request)


async def _user_response(request: Request, *, new_secret: str | None = None, status_code: int = 200,
                         error: str | None = None, errors: dict[str, str] | None = None,
                         values: dict[str, Any] | None = None) -> Response:
    user_id = path_id(request, "user_id")

    def load(session: Session) -> tuple[User, list[ApiToken]]:
        return row_or_404(session, User, user_id), tokens.tokens_of(session, user_id)

    user, listed = await in_session(request, load)
    context = {**token_context(request, user, listed), "user": user, "roles": list(Role), "new_secret": new_secret,
               "error": error, "errors": errors or {}, "values": values or {}}
    return render(request, "admin_user.html", context, block="user_detail", status_code=status_code)


async def _change(request: Request, form_model: type[F],
                  apply: Callable[[Session, User, F, Principal], list[accounts.ShortOfApprovers]]) -> Response:
    """Parse the form, apply one account rule to the person, and show them again (422 with
    the reason when the form or the rule refuses), saying which resources the change left
    with fewer approvers than they require."""
    principal = current_principal(request)
    user_id = path_id(request, "user_id")
    try:
        form = parse_form(form_model, await request.form())
    except FormInvalid as invalid:
        return await _user_response(request, status_code=422, errors=invalid.errors)
    try:
        short = await in_session(request, lambda s: apply(s, row_or_404(s, User, user_id), form, principal))
    except accounts.AccountError as refused:
        return await _user_response(request, status_code=422, error=str(refused))
    page = f"/admin/users/{user_id}"
    if not short:
        return redirect_with(request, page, "Saved.")
    names = ", ".join(f"{s.name} ({s.approvers} of {s.required} approvers)" for s in short)
    return redirect_with(request, page, f"Saved. These resources now have fewer approvers than they require: {names}. "
                                        "Add approvers on their pages.", "warning")


async def change_role(request: Request) -> Response:
    """Make this person a member, an approver or an admin (the last admin stays one)."""
    return await _change(request, RoleForm, lambda s, user, form, by: accounts.change_role(
        s, user, form.role, actor=by.email, actor_id=by.id))


async def set_active(request: Request) -> Response:
    """Activate or deactivate this person; deactivating ends their sessions and tokens."""
    return await _change(request, ActiveForm, lambda s, user, form, by: accounts.set_active(
        s, user, form.active, actor=by.email, actor_id=by.id))


async def issue_token(request: Request) -> Response:
    """A new API token for this service account (people issue their own at /account/tokens);
    the secret is on this response only."""
    user_id = path_id(request, "user_id")
    try:
        secret = await issue_from_form(request, user_id)
    except IssueRefused as refused:
        return await _user_response(request, status_code=refused.status_code, error=refused.error,
                                    errors=refused.errors, values=refused.values)
    response = await _user_response(request, new_secret=secret, status_code=201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke_token(request: Request) -> Response:
    """Revoke any person's token (theirs to issue, any admin's to revoke)."""
    user_id = path_id(request, "user_id")
    await revoke_one(request, user_id, path_id(request, "token_id", "token"))
    return redirect_with(request, f"/admin/users/{user_id}", "Token revoked.")


routes = [
    guarded_route("/admin/users", users_page, access=Access.admin),
    guarded_route("/admin/users", create_user, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}", user_page, access=Access.admin),
    guarded_route("/admin/users/{user_id:int}/role", change_role, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}/active", set_active, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}/tokens", issue_token, access=Access.admin, methods=["POST"],
                  browser_only=True),
    guarded_route("/admin/users/{user_id:int}/tokens/{token_id:int}/revoke", revoke_token, access=Access.admin,
                  methods=["POST"], browser_only=True),
]
