"""Admin pages: people (roles, activation, API tokens) and resources (approvers, limits,
and who held one at a given time).

Every route here is admin-only through `guarded_route`; the rules (last admin, approver
counts) live in `webapp.services.accounts` and `webapp.services.catalog`.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar
from urllib.parse import urlencode

from pydantic import Field, StringConstraints, field_validator
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from webapp.services import accounts, catalog
from webapp.services import identity as auth
from webapp.services.access_history import AccessAt, AccessAtQuery, holders_at
from webapp.core.durations import DURATIONS, LABELS, duration_key
from webapp.core.forms import FormInvalid, FormModel, parse_form, parse_query
from webapp.core.models import ApiToken, Resource, ResourceKind, Role, User, utcnow
from webapp.core.passwords import MIN_PASSWORD_LENGTH
from webapp.web.errors import error_response
from webapp.web.rendering import DataJSONResponse, render, wants_json
from webapp.web.database import in_session
from webapp.web.security import Access, current_principal, guarded_route

T = TypeVar("T")
PAGE_SIZE = 50
Text = Annotated[str, StringConstraints(max_length=100)]


class NewUserForm(FormModel):
    email: Annotated[str, StringConstraints(min_length=3, max_length=320)]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    department: Text = ""
    title: Text = ""
    role: Role = Role.member
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


class TokenForm(FormModel):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]


class ResourceForm(FormModel):
    name: Annotated[str, StringConstraints(min_length=2, max_length=120, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]
    kind: ResourceKind = ResourceKind.app
    description: Annotated[str, StringConstraints(max_length=2000)] = ""
    approvals_required: int = Field(default=1, ge=1, le=10)
    max_duration: str = "permanent"
    pending_ttl_hours: int = Field(default=72, ge=1, le=24 * 90)
    auto_approve: bool = False

    @field_validator("max_duration")
    @classmethod
    def _offered(cls, value: str) -> str:
        if value not in DURATIONS:
            raise ValueError("Choose one of the listed durations.")
        return value


def _path_id(request: Request, name: str) -> int:
    value = request.path_params[name]
    if not isinstance(value, int) or not 0 < value < 2**31:
        raise HTTPException(404, "No such record.")
    return value


def _get(session: Session, model: type[T], ident: int) -> T:
    row = session.get(model, ident)
    if row is None:
        raise HTTPException(404, f"No {model.__name__.lower()} with id {ident}.")
    return row


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
                             role=form.role, department=form.department, title=form.title, actor=principal.email)

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
                         error: str | None = None, errors: dict[str, str] | None = None) -> Response:
    user_id = _path_id(request, "user_id")

    def load(session: Session) -> tuple[User, list[ApiToken]]:
        user = _get(session, User, user_id)
        tokens = session.query(ApiToken).filter(ApiToken.user_id == user_id).order_by(ApiToken.id.desc()).all()  # type: ignore[union-attr]
        return user, tokens

    user, tokens = await in_session(request, load)
    context = {"user": user, "tokens": tokens, "roles": list(Role), "new_secret": new_secret,
               "error": error, "errors": errors or {}, "values": {}}
    return render(request, "admin_user.html", context, block="user_detail", status_code=status_code)


async def change_role(request: Request) -> Response:
    principal = current_principal(request)
    user_id = _path_id(request, "user_id")
    try:
        form = parse_form(RoleForm, await request.form())
    except FormInvalid as invalid:
        return await _user_response(request, status_code=422, errors=invalid.errors)

    def change(session: Session) -> None:
        accounts.change_role(session, _get(session, User, user_id), form.role, actor=principal.email,
                             actor_id=principal.id)

    try:
        await in_session(request, change)
    except accounts.AccountError as refused:
        return await _user_response(request, status_code=422, error=str(refused))
    return RedirectResponse(f"/admin/users/{user_id}", status_code=303)


async def set_active(request: Request) -> Response:
    principal = current_principal(request)
    user_id = _path_id(request, "user_id")
    try:
        form = parse_form(ActiveForm, await request.form())
    except FormInvalid as invalid:
        return await _user_response(request, status_code=422, errors=invalid.errors)

    def change(session: Session) -> None:
        accounts.set_active(session, _get(session, User, user_id), form.active, actor=principal.email,
                            actor_id=principal.id)

    try:
        await in_session(request, change)
    except accounts.AccountError as refused:
        return await _user_response(request, status_code=422, error=str(refused))
    return RedirectResponse(f"/admin/users/{user_id}", status_code=303)


async def issue_token(request: Request) -> Response:
    """A new API token for this person; the secret is on this response only."""
    principal = current_principal(request)
    user_id = _path_id(request, "user_id")
    try:
        form = parse_form(TokenForm, await request.form())
    except FormInvalid as invalid:
        return await _user_response(request, status_code=422, errors=invalid.errors)

    def issue(session: Session) -> str:
        user = _get(session, User, user_id)
        if not user.active:
            raise HTTPException(409, "Activate this person before issuing a token.")
        _token, secret = auth.issue_token(session, user=user, name=form.name, issued_by=principal, now=utcnow())
        return secret

    secret = await in_session(request, issue)
    response = await _user_response(request, new_secret=secret, status_code=201)
    response.headers["Cache-Control"] = "no-store"
    return response


async def revoke_token(request: Request) -> Response:
    principal = current_principal(request)
    user_id = _path_id(request, "user_id")
    token_id = _path_id(request, "token_id")

    def revoke(session: Session) -> None:
        token = _get(session, ApiToken, token_id)
        if token.user_id != user_id:
            raise HTTPException(404, f"No api token with id {token_id}.")
        if token.revoked_at is None:
            auth.revoke_token(session, token, revoked_by=principal, now=utcnow())

    await in_session(request, revoke)
    return RedirectResponse(f"/admin/users/{user_id}", status_code=303)


# Resources ---------------------------------------------------------------------------------

def _resource_choices() -> dict[str, Any]:
    return {"kinds": list(ResourceKind), "durations": [(k, LABELS[k]) for k in DURATIONS]}


async def resources_page(request: Request) -> Response:
    """What can be requested, who approves it, and the form to add a resource."""
    return await _resources_response(request)


async def _resources_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                              values: dict[str, Any] | None = None, error: str | None = None,
                              approver_ids: list[int] | None = None) -> Response:
    def load(session: Session) -> tuple[Any, list[User]]:
        return catalog.list_resources(session), catalog.possible_approvers(session)

    resources, candidates = await in_session(request, load)
    context = {"resources": resources, "candidates": candidates, "errors": errors or {}, "error": error,
               "values": values or {"kind": "app", "approvals_required": "1", "max_duration": "permanent",
                                    "pending_ttl_hours": "72"},
               "approver_ids": approver_ids or [], **_resource_choices()}
    return render(request, "admin_resources.html", context, block="resources_table", status_code=status_code)


def _approver_ids(raw: Any) -> list[int]:
    ids = []
    for value in raw.getlist("approvers"):
        if isinstance(value, str) and value.isdigit() and len(value) < 10:
            ids.append(int(value))
        else:
            raise FormInvalid({"approvers": "Choose approvers from the list."}, {})
    return ids


def _changes(form: ResourceForm, approver_ids: list[int]) -> catalog.ResourceChanges:
    return catalog.ResourceChanges(
        name=form.name, kind=form.kind, description=form.description,
        approvals_required=form.approvals_required, max_duration_seconds=DURATIONS[form.max_duration],
        pending_ttl_seconds=form.pending_ttl_hours * 3600, auto_approve=form.auto_approve,
        approver_ids=approver_ids,
    )


async def _save_resource(request: Request, resource_id: int | None) -> Response:
    principal = current_principal(request)
    raw = await request.form()
    failed = _resources_response if resource_id is None else _resource_response
    try:
        form = parse_form(ResourceForm, raw)
        approver_ids = _approver_ids(raw)
    except FormInvalid as invalid:
        return await failed(request, status_code=422, errors=invalid.errors,
                            values={k: v for k, v in raw.items() if isinstance(v, str)})

    def save(session: Session) -> int:
        existing = _get(session, Resource, resource_id) if resource_id is not None else None
        saved = catalog.save_resource(session, _changes(form, approver_ids), resource=existing,
                                      actor=principal.email, actor_id=principal.id)
        return saved.id  # type: ignore[return-value]

    try:
        saved_id = await in_session(request, save)
    except catalog.CatalogError as refused:
        return await failed(request, status_code=422, error=str(refused),
                            values={k: v for k, v in raw.items() if isinstance(v, str)}, approver_ids=approver_ids)
    return RedirectResponse(f"/admin/resources/{saved_id}" if resource_id else "/admin/resources", status_code=303)


async def create_resource(request: Request) -> Response:
    return await _save_resource(request, None)


async def update_resource(request: Request) -> Response:
    return await _save_resource(request, _path_id(request, "resource_id"))


async def resource_page(request: Request) -> Response:
    """Edit one resource and its approvers."""
    return await _resource_response(request)


async def _resource_response(request: Request, *, status_code: int = 200, errors: dict[str, str] | None = None,
                             values: dict[str, Any] | None = None, error: str | None = None,
                             approver_ids: list[int] | None = None) -> Response:
    resource_id = _path_id(request, "resource_id")

    def load(session: Session) -> tuple[Resource, list[User], list[User]]:
        resource = _get(session, Resource, resource_id)
        return resource, catalog.approvers_of(session, resource_id), catalog.possible_approvers(session)

    resource, approvers, candidates = await in_session(request, load)
    current = {
        "name": resource.name, "kind": resource.kind, "description": resource.description,
        "approvals_required": str(resource.approvals_required),
        "max_duration": duration_key(resource.max_duration_seconds) if resource.max_duration_seconds in DURATIONS.values() else "permanent",
        "pending_ttl_hours": str(resource.pending_ttl_seconds // 3600),
        "auto_approve": "on" if resource.auto_approve else "",
    }
    context = {"resource": resource, "candidates": candidates, "errors": errors or {}, "error": error,
               "values": values or current,
               "approver_ids": approver_ids if approver_ids is not None else [u.id for u in approvers],
               "access_at": "", "access_errors": {}, **_resource_choices()}
    return render(request, "admin_resource.html", context, block="resource_form", status_code=status_code)


def _local_time(moment: datetime) -> str:
    """A UTC time as a datetime-local field shows it: no zone; seconds only when there are some."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds" if moment.second else "minutes")


BAD_TIME = "Enter a date and time, such as 2026-03-01T09:30 (UTC)."


async def resource_access_page(request: Request) -> Response:
    """Who held this resource at the moment `at` (UTC; now when empty), from the grants."""
    resource_id = _path_id(request, "resource_id")
    raw = request.query_params.get("at", "")
    try:
        query = parse_form(AccessAtQuery, {"at": raw})
    except FormInvalid as invalid:
        message = invalid.errors.get("at", BAD_TIME)
        message = message if message.startswith("Enter") else BAD_TIME
        if wants_json(request):
            return error_response(request, 400, message, fields={"at": message})
        resource = await in_session(request, lambda s: _get(s, Resource, resource_id))
        # The field starts empty: a datetime-local input refuses (and the browser warns about) other text.
        context = {"resource": resource, "answer": None, "access_at": "", "access_errors": {"at": message},
                   "error": message}
        return render(request, "admin_resource_access.html", context, block="resource_access", status_code=400)
    now = utcnow()
    at = query.at or now

    def load(session: Session) -> tuple[Resource, AccessAt]:
        return _get(session, Resource, resource_id), holders_at(session, resource_id, at, now=now)

    resource, answer = await in_session(request, load)
    shown = _local_time(at)
    if wants_json(request):
        return DataJSONResponse({"resource": {"id": resource.id, "name": resource.name}, "at": at, "more": answer.more,
                                 "holders": [{**asdict(h), "request_url": f"/requests/{h.request_id}" if h.request_id
                                              else None} for h in answer.holders]})
    context = {"resource": resource, "answer": answer, "access_at": shown, "access_errors": {}, "error": None,
               "link": f"/admin/resources/{resource_id}/access?{urlencode({'at': shown})}"}
    return render(request, "admin_resource_access.html", context, block="resource_access")


routes = [
    guarded_route("/admin/users", users_page, access=Access.admin),
    guarded_route("/admin/users", create_user, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}", user_page, access=Access.admin),
    guarded_route("/admin/users/{user_id:int}/role", change_role, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}/active", set_active, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}/tokens", issue_token, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/users/{user_id:int}/tokens/{token_id:int}/revoke", revoke_token, access=Access.admin,
                  methods=["POST"]),
    guarded_route("/admin/resources", resources_page, access=Access.admin),
    guarded_route("/admin/resources", create_resource, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/resources/{resource_id:int}", resource_page, access=Access.admin),
    guarded_route("/admin/resources/{resource_id:int}", update_resource, access=Access.admin, methods=["POST"]),
    guarded_route("/admin/resources/{resource_id:int}/access", resource_access_page, access=Access.admin),
]
