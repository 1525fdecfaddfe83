"""The requests table and the request lists: the requests a viewer may see, filtered,
sorted and paged in SQL, as `RequestRow`s.

`RequestRow` is the one shape of a request in a list: the table, My requests, Waiting for
my approval, the live feed's rows and the JSON answers all use it, and the API spec
describes it as it is.

Visibility is `access.visible_to`, the SQL form of `may_view`, so a page reads
only its own rows whatever the table holds. Paging is by offset with a LIMIT+1 probe for
the next page; the offset is walked over ids only (an index), and the rows of the page
are read afterwards. The total is counted only up to `COUNT_CAP` (beyond it, "more
than"), so no page counts the whole table. Every order ends with the id: the order is
total, so pages never overlap. Each row carries the actions this viewer may take on it
(`RowActions`), which is all the row template needs.

Free-text search (`q`) is a case-insensitive substring match, which no B-tree index can
serve: it scans the visible rows (roughly 50 ms per 100k rows on SQLite, 100 ms on
PostgreSQL; see bench/requests_table.py). A trigram index is the next step if it matters.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from pydantic import Field, StringConstraints
from sqlalchemy.orm import Session

from webapp.core.durations import describe
from webapp.core.forms import FormModel
from webapp.core.models import AccessRequest, Approval, RequestStatus, Resource, User
from webapp.services.access import Viewer, decides, may_cancel, visible_to
from webapp.services.identity import Principal

PAGE_SIZE = 25
ASK_AGAIN = frozenset({RequestStatus.rejected, RequestStatus.expired, RequestStatus.canceled, RequestStatus.revoked,
                       RequestStatus.failed})  # over: "Request again" copies it into the form
MAX_PAGE = 10_000
COUNT_CAP = 1000

Order = Literal["asc", "desc"]
SortKey = Literal["id", "requester", "resource", "status", "duration", "created", "updated"]


@dataclass(frozen=True)
class Column:
    key: SortKey
    label: str
    first_order: Order  # the direction a first click on the heading sorts by


COLUMNS: tuple[Column, ...] = (
    Column("id", "ID", "desc"),
    Column("requester", "Requester", "asc"),
    Column("resource", "Resource", "asc"),
    Column("status", "Status", "asc"),
    Column("duration", "Duration", "asc"),
    Column("created", "Created", "desc"),
    Column("updated", "Updated", "desc"),
)
FIRST_ORDER: dict[str, Order] = {c.key: c.first_order for c in COLUMNS}


class RequestQuery(FormModel):
    """The table's query string. Read it with `parse_query`: a bad value falls back to its default."""

    sort: SortKey = "created"
    order: Order | None = None
    status: RequestStatus | None = None
    resource: int | None = Field(default=None, ge=1, le=2**31 - 1)
    requester: Annotated[str, StringConstraints(max_length=320)] = ""
    q: Annotated[str, StringConstraints(max_length=200)] = ""
    page: int = Field(default=1, ge=1, le=MAX_PAGE)

    @property
    def direction(self) -> Order:
        return self.order or FIRST_ORDER[self.sort]

    @property
    def filtered(self) -> bool:
        return bool(self.status or self.resource or self.requester or self.q)

    def params(self, **changes: Any) -> dict[str, str]:
        """The query string of this view with `changes`, leaving out what is at its default."""
        view = self.model_copy(update=changes)
        params: dict[str, str] = {}
        if (view.sort, view.direction) != ("created", FIRST_ORDER["created"]):
            params.update(sort=view.sort, order=view.direction)
        for name in ("status", "resource", "requester", "q"):
            if value := getattr(view, name):
                params[name] = str(value)
        if view.page > 1:
            params["page"] = str(view.page)
        return params


@dataclass(frozen=True)
class RowActions:
    """What one viewer may do on one request: approve or reject it, cancel it, or (their own,
    once it is over) ask for the same again."""

    approve: bool = False
    reject: bool = False
    cancel: bool = False
    again: bool = False


@dataclass(frozen=True)
class RequestRow:
    """One access request in a list, with what the viewer may do on it (`actions`; none
    until `for_viewer` or `row_actions` says)."""

    id: int
    url: str
    requester_id: int
    requester: str
    requester_email: str
    resource_id: int
    resource: str
    reason: str
    status: RequestStatus
    duration: str  # as people read it: "8 hours", "permanent"
    duration_seconds: int | None  # None: permanent
    created_at: datetime
    updated_at: datetime
    pending_until: datetime | None
    decision_note: str | None = None  # why it was rejected: the requester sees it in every list
    actions: RowActions = RowActions()

    def for_viewer(self, actions: RowActions) -> RequestRow:
        return replace(self, actions=actions)


def request_url(request_id: int) -> str:
    return f"/requests/{request_id}"


@dataclass(frozen=True)
class RequestTable:
    query: RequestQuery
    rows: list[RequestRow]
    page_size: int
    has_next: bool
    total: int
    total_capped: bool  # True: there are more than `total` rows

    @property
    def has_previous(self) -> bool:
        return self.query.page > 1

    @property
    def first_number(self) -> int:
        return (self.query.page - 1) * self.page_size + 1

    @property
    def last_number(self) -> int:
        return self.first_number + len(self.rows) - 1


_SORT_COLUMNS: dict[str, Any] = {
    "id": AccessRequest.id,
    "requester": User.name,
    "resource": Resource.name,
    "status": AccessRequest.status,
    "duration": AccessRequest.duration_seconds,
    "created": AccessRequest.created_at,
    "updated": AccessRequest.updated_at,
}


def _order_by(query: RequestQuery) -> list[Any]:
    descending = query.direction == "desc"
    ident: Any = AccessRequest.id
    terms = [ident.desc() if descending else ident.asc()]
    if query.sort != "id":
        column = _SORT_COLUMNS[query.sort]
        term = column.desc() if descending else column.asc()
        if query.sort == "duration":  # permanent (NULL) is the longest, on every backend
            term = term.nulls_first() if descending else term.nulls_last()
        terms.insert(0, term)
    return terms


def _contains(column: Any, text: str) -> Any:
    return column.icontains(text, autoescape=True)


def _people_matching(text: str) -> sa.Select[Any]:
    return sa.select(User.id).where(sa.or_(_contains(User.name, text), _contains(User.email, text)))


def _conditions(viewer: Viewer, query: RequestQuery) -> list[Any]:
    """The WHERE clauses of a view: what the viewer may see, narrowed by the filters. They
    name only access_requests columns (people and resources through subqueries), so
    paging and counting need no join unless the order does."""
    where: list[Any] = [visible_to(viewer)]
    if query.status:
        where.append(AccessRequest.status == query.status)
    if query.resource:
        where.append(AccessRequest.resource_id == query.resource)
    if query.requester:
        where.append(AccessRequest.requester_id.in_(_people_matching(query.requester)))  # type: ignore[attr-defined]
    if query.q:
        where.append(sa.or_(
            _contains(AccessRequest.reason, query.q),
            AccessRequest.requester_id.in_(_people_matching(query.q)),  # type: ignore[attr-defined]
            AccessRequest.resource_id.in_(sa.select(Resource.id).where(_contains(Resource.name, query.q))),  # type: ignore[attr-defined]
        ))
    return where


def _page_ids(session: Session, where: list[Any], query: RequestQuery, page_size: int) -> list[int]:
    """The ids of the page and one more (the next-page probe). Only ids: the offset is
    walked through an index, not through joined, fully read rows."""
    ids = sa.select(AccessRequest.id).where(*where)
    if query.sort == "requester":
        ids = ids.join(User, User.id == AccessRequest.requester_id)
    elif query.sort == "resource":
        ids = ids.join(Resource, Resource.id == AccessRequest.resource_id)
    ids = ids.order_by(*_order_by(query)).offset((query.page - 1) * page_size).limit(page_size + 1)
    return list(session.scalars(ids).all())


_ROW_COLUMNS = (AccessRequest.id, AccessRequest.requester_id, User.name, User.email, AccessRequest.resource_id,
                Resource.name, AccessRequest.reason, AccessRequest.status, AccessRequest.duration_seconds,
                AccessRequest.created_at, AccessRequest.updated_at, AccessRequest.pending_until)


def _rows_query() -> sa.Select[Any]:
    return (sa.select(*_ROW_COLUMNS)
            .join(User, User.id == AccessRequest.requester_id)
            .join(Resource, Resource.id == AccessRequest.resource_id))


def _row(found: Any) -> RequestRow:
    (request_id, requester_id, requester, email, resource_id, resource, reason, status, seconds, created, updated,
     pending_until) = found
    return RequestRow(request_id, request_url(request_id), requester_id, requester, email, resource_id, resource,
                      reason, RequestStatus(status), describe(seconds), seconds, created, updated, pending_until)


def _rows(session: Session, query: sa.Select[Any]) -> list[RequestRow]:
    """The rows `query` finds, with the reasons of the rejected ones (one more query, and
    only when the page holds a rejected request)."""
    rows = [_row(found) for found in session.execute(query)]
    rejected = [row.id for row in rows if row.status == RequestStatus.rejected]
    if not rejected:
        return rows
    notes = dict(session.execute(
        sa.select(Approval.request_id, Approval.comment)
        .where(Approval.request_id.in_(rejected), Approval.decision == "reject", Approval.counted)  # type: ignore[attr-defined]
        .order_by(Approval.id)).all())
    return [replace(row, decision_note=notes.get(row.id)) if row.id in notes else row for row in rows]


def load_rows(session: Session, ids: list[int]) -> list[RequestRow]:
    """The rows with these ids, in the order given (without actions)."""
    if not ids:
        return []
    by_id = {row.id: row for row in _rows(session, _rows_query().where(AccessRequest.id.in_(ids)))}  # type: ignore[union-attr]
    return [by_id[i] for i in ids if i in by_id]


def _total(session: Session, where: list[Any], query: RequestQuery, page_size: int, shown: int,
           has_next: bool) -> tuple[int, bool]:
    """How many rows the view has, and whether that is only a lower bound. The page tells
    when it is the last one or lies beyond COUNT_CAP; otherwise count, up to COUNT_CAP + 1."""
    before = (query.page - 1) * page_size
    if not has_next and (shown or query.page == 1):
        return before + shown, False
    if has_next and before + shown >= COUNT_CAP:
        return before + shown, True
    capped = sa.select(AccessRequest.id).where(*where).limit(COUNT_CAP + 1).subquery()
    counted = session.scalar(sa.select(sa.func.count()).select_from(capped)) or 0
    return min(counted, COUNT_CAP), counted > COUNT_CAP


def load_table(session: Session, viewer: Viewer, query: RequestQuery, *, page_size: int = PAGE_SIZE) -> RequestTable:
    """One page of the table as `viewer` sees it."""
    where = _conditions(viewer, query)
    ids = _page_ids(session, where, query, page_size)
    rows = with_actions(session, viewer, load_rows(session, ids[:page_size]))
    has_next = len(ids) > page_size
    total, capped = _total(session, where, query, page_size, len(rows), has_next)
    return RequestTable(query=query, rows=rows, page_size=page_size,
                        has_next=has_next, total=total, total_capped=capped)


def resource_choices(session: Session) -> list[tuple[int, str]]:
    """(id, name) of every resource, by name: the options of the resource filter."""
    return [(row.id, row.name) for row in session.execute(sa.select(Resource.id, Resource.name).order_by(Resource.name))]


def actions_for(principal: Principal, row: RequestRow, *, approves_resource: bool, has_approved: bool) -> RowActions:
    """What `principal` may do on `row`: decide a pending request of a resource they approve
    (not their own, and not twice), or cancel their own pending request."""
    decide = (row.status == RequestStatus.requested and not has_approved
              and decides(principal, requester_id=row.requester_id, approves_resource=approves_resource))
    return RowActions(approve=decide, reject=decide,
                      cancel=may_cancel(principal, requester_id=row.requester_id, status=row.status),
                      again=row.requester_id == principal.id and row.status in ASK_AGAIN)


def with_actions(session: Session, viewer: Viewer, rows: list[RequestRow]) -> list[RequestRow]:
    """The rows, each carrying what `viewer` may do on it."""
    principal = viewer.principal
    pending = [row.id for row in rows if row.status == RequestStatus.requested]
    approved = set(session.scalars(sa.select(Approval.request_id).where(
        Approval.approver_id == principal.id, Approval.counted,
        Approval.request_id.in_(pending))).all()) if pending else set()  # type: ignore[attr-defined]
    return [row.for_viewer(actions_for(principal, row, approves_resource=row.resource_id in viewer.approves,
                                       has_approved=row.id in approved)) for row in rows]


# The personal lists ------------------------------------------------------------------------------

def my_requests(session: Session, viewer: Viewer, *, limit: int = 200) -> list[RequestRow]:
    """Everything the viewer asked for, newest first."""
    query = (_rows_query().where(AccessRequest.requester_id == viewer.principal.id)
             .order_by(AccessRequest.created_at.desc(), AccessRequest.id.desc()).limit(limit))  # type: ignore[attr-defined, union-attr]
    return with_actions(session, viewer, _rows(session, query))


def _waiting(viewer: Viewer, *columns: Any) -> sa.Select[Any]:
    """Pending requests the viewer may decide and has not approved yet."""
    principal = viewer.principal
    query = (sa.select(*columns).select_from(AccessRequest)
             .join(User, User.id == AccessRequest.requester_id)
             .join(Resource, Resource.id == AccessRequest.resource_id)
             .where(AccessRequest.status == RequestStatus.requested, AccessRequest.requester_id != principal.id))
    if not principal.is_admin:
        query = query.where(AccessRequest.resource_id.in_(sorted(viewer.approves)))  # type: ignore[attr-defined]
    already = sa.select(Approval.request_id).where(Approval.approver_id == principal.id, Approval.counted)
    return query.where(AccessRequest.id.not_in(already))  # type: ignore[union-attr]


def waiting_for(session: Session, viewer: Viewer, *, limit: int = 200) -> list[RequestRow]:
    """Pending requests the viewer may decide and has not approved yet, oldest first."""
    query = _waiting(viewer, *_ROW_COLUMNS).order_by(AccessRequest.created_at, AccessRequest.id).limit(limit)
    return with_actions(session, viewer, _rows(session, query))


def count_waiting(session: Session, viewer: Viewer) -> int:
    """How many requests wait for the viewer's decision: the count beside "Waiting for me"."""
    if viewer.principal.service or (not viewer.principal.is_admin and not viewer.approves):
        return 0
    return session.scalar(sa.select(sa.func.count()).select_from(_waiting(viewer, AccessRequest.id).subquery())) or 0
