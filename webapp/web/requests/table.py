"""The requests table as the web shows it: links for sorting and paging, the caption, the
filter form's options, and the JSON shape. Computed here so the templates only render."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from webapp.core.models import RequestStatus
from webapp.services.request_table import COLUMNS, FIRST_ORDER, Column, RequestTable

TABLE_PATH = "/requests"
ARIA_SORT = {"asc": "ascending", "desc": "descending"}


def table_href(params: dict[str, str]) -> str:
    return f"{TABLE_PATH}?{urlencode(params)}" if params else TABLE_PATH


@dataclass(frozen=True)
class Heading:
    column: Column
    href: str
    aria_sort: str | None  # set on the sorted column only
    arrow: str  # a visual cue; screen readers get aria-sort


@dataclass(frozen=True)
class TableView:
    """A page of the table with everything its template shows. `swap`: links replace the
    table in place (htmx, on /requests); otherwise they navigate to /requests (the dashboard)."""

    table: RequestTable
    headings: list[Heading]
    caption: str
    empty_text: str
    previous_href: str | None
    next_href: str | None
    swap: bool
    filters: dict[str, Any] | None  # the filter form's options and values; None: no form

    @property
    def takes_new_rows(self) -> bool:
        """New requests belong on top of this view (the live feed puts them there): the
        first page, newest first, unfiltered."""
        query = self.table.query
        return query.page == 1 and not query.filtered and (query.sort, query.direction) == ("created", "desc")


def _headings(table: RequestTable) -> list[Heading]:
    query = table.query
    headings = []
    for column in COLUMNS:
        sorted_here = column.key == query.sort
        order = ("asc" if query.direction == "desc" else "desc") if sorted_here else FIRST_ORDER[column.key]
        headings.append(Heading(
            column=column, href=table_href(query.params(sort=column.key, order=order, page=1)),
            aria_sort=ARIA_SORT[query.direction] if sorted_here else None,
            arrow=("▲" if query.direction == "asc" else "▼") if sorted_here else "",
        ))
    return headings


def _caption(table: RequestTable) -> str:
    query = table.query
    label = next(c.label for c in COLUMNS if c.key == query.sort)
    sort = f"sorted by {label}, {ARIA_SORT[query.direction]}"
    if not table.rows:
        return f"Access requests, {sort}: none on this page."
    total = f"more than {table.total:,}" if table.total_capped else f"{table.total:,}"
    return f"Access requests, {sort}: {table.first_number:,} to {table.last_number:,} of {total}."


def _filter_options(resources: list[tuple[int, str]], table: RequestTable) -> dict[str, Any]:
    query = table.query
    return {
        "statuses": [("", "Any status")] + [(s.value, s.value) for s in RequestStatus],
        "resources": [("", "Any resource"), *resources],
        "chosen": {"status": query.status or "", "resource": query.resource or "", "requester": query.requester,
                   "q": query.q},
        # The current order rides along with the filters; paging starts over.
        "hidden": {k: v for k, v in query.params(page=1).items() if k in ("sort", "order")},
    }


def table_view(table: RequestTable, *, swap: bool = True, resources: list[tuple[int, str]] | None = None) -> TableView:
    query = table.query
    return TableView(
        table=table, headings=_headings(table), caption=_caption(table),
        empty_text="No requests match these filters." if query.filtered else "No requests to show.",
        previous_href=table_href(query.params(page=query.page - 1)) if table.has_previous else None,
        next_href=table_href(query.params(page=query.page + 1)) if table.has_next else None,
        swap=swap, filters=None if resources is None else _filter_options(resources, table),
    )


def table_json(view: TableView) -> dict[str, Any]:
    table = view.table
    return {
        "rows": table.rows,  # RequestRow: the same shape the page and the live feed use
        "paging": {
            "page": table.query.page, "page_size": table.page_size, "sort": table.query.sort,
            "order": table.query.direction, "has_previous": table.has_previous, "has_next": table.has_next,
            "previous": view.previous_href, "next": view.next_href,
            "total": table.total, "total_capped": table.total_capped,
        },
    }
