"""Bulk import of people from a randomuser.me-compatible source.

The public surface, used by the import workflows (`webapp.workflows.imports`), the admin
pages (`webapp.web.admin.imports`) and the CLI (`webapp import-users`):

    records   validate one randomuser record and flatten it into an `ImportedPerson` row
    source    where people come from (an API base URL or a local JSON file), page fetching
              with a disk cache keyed by (source, seed, page, results, nat)
    plan      how a job splits into pages and chunks
    jobs      reading jobs and their progress for pages and the CLI; cancel requests
    orders    what a run carries: its order, the facts its steps share, what it returns
    runs      every state change of a job and its chunks (the workflows' transactions)
    tracing   OpenTelemetry spans, exported over OTLP/HTTP when an endpoint is set

Errors:

    InvalidRecord      a record that cannot be imported; it goes to the error log
    SourceError        a page could not be read; `transient` says whether a retry may help
      PageMissing      a page is not in the cache (the caller fetches it again)
    SourceRefused      the source a person typed is not a URL or an allowed file
"""

from webapp.services.people_import.records import InvalidRecord, person_row
from webapp.services.people_import.source import PageMissing, Source, SourceError, SourceRefused, parse_source

__all__ = [
    "InvalidRecord",
    "PageMissing",
    "Source",
    "SourceError",
    "SourceRefused",
    "parse_source",
    "person_row",
]
