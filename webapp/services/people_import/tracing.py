"""OpenTelemetry spans for imports: the job run, each chunk, each page fetch, each insert.

Off unless an OTLP endpoint is configured (`IMPORT_OTLP_ENDPOINT`): the tracer is then
OpenTelemetry's no-op one and costs next to nothing. With an endpoint, spans go through a
batching processor to an OTLP/HTTP exporter. The provider is this module's own, not the
global one, so DBOS's tracing (off in this app) and ours never fight over it.

Every span carries the workflow id it ran in (`workflow.id`). A chunk runs in its own
workflow, on another thread or process, so the job's span context travels to it in the
chunk's input (a W3C `traceparent`), and its spans join the job's trace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

SERVICE_NAME = "gatehouse"
INSTRUMENTATION = "gatehouse.imports"

_lock = threading.Lock()
_providers: dict[str, Any] = {}
_override: Any = None  # a provider installed by a test
_propagator = TraceContextTextMapPropagator()


def _exporting_provider(endpoint: str) -> Any:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def tracer(endpoint: str | None) -> trace.Tracer:
    """The tracer for this endpoint (one provider per endpoint per process), or a no-op."""
    if _override is not None:
        return _override.get_tracer(INSTRUMENTATION)  # type: ignore[no-any-return]
    if not endpoint:
        return trace.NoOpTracer()
    with _lock:
        provider = _providers.get(endpoint)
        if provider is None:
            provider = _providers[endpoint] = _exporting_provider(endpoint)
    return provider.get_tracer(INSTRUMENTATION)  # type: ignore[no-any-return]


def install_test_provider(provider: Any) -> None:
    """Send every import span to `provider` (a test's, with an in-memory exporter); None undoes it."""
    global _override
    _override = provider


def shutdown() -> None:
    """Flush and stop the exporting providers (at process exit)."""
    with _lock:
        providers = list(_providers.values())
        _providers.clear()
    for provider in providers:
        provider.shutdown()


@contextmanager
def span(endpoint: str | None, name: str, workflow_id: str | None, carrier: dict[str, str] | None = None,
         **attributes: Any) -> Iterator[trace.Span]:
    """A span named `name` with the workflow id and `attributes`; with `carrier` (from
    `carrier_of_current`), a child of the span that made it."""
    context = _propagator.extract(carrier) if carrier else None
    values = {f"import.{key}": value for key, value in attributes.items() if value is not None}
    if workflow_id:
        values["workflow.id"] = workflow_id
    with tracer(endpoint).start_as_current_span(name, context=context, attributes=values) as current:
        yield current


def carrier_of_current() -> dict[str, str]:
    """The current span context as W3C headers, to hand to a child workflow ({} when off)."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier
