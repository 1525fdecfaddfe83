"""Logging: JSON lines in production, readable lines in development.

Every record carries the request id of the HTTP request that caused it and, inside a
workflow, the workflow id (read from the source the workflow layer installs). DBOS's own
logger is routed through the same handler.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
HANDLER_NAME = "gatehouse"


def _no_workflow() -> str | None:
    return None


# Where the id of the workflow running on this thread comes from: the workflow layer plugs
# in DBOS's context (webapp.workflows.runtime), so this module needs no DBOS of its own.
_workflow_id_source: Callable[[], str | None] = _no_workflow


def read_workflow_ids_from(source: Callable[[], str | None]) -> None:
    """Stamp records with the workflow id that `source` returns (None outside workflows)."""
    global _workflow_id_source
    _workflow_id_source = source


class ContextFilter(logging.Filter):
    """Stamps request and workflow ids onto every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        record.workflow_id = _workflow_id_source()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and value is not None and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s%(ids)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        ids = []
        if getattr(record, "request_id", None):
            ids.append(f"req={record.request_id}")
        if getattr(record, "workflow_id", None):
            ids.append(f"wf={record.workflow_id}")
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        return super().format(record)


def configure_logging(level: str, fmt: str, stream: Any = None) -> None:
    """Install one handler on the root logger and route DBOS and uvicorn through it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(ContextFilter())

    root = logging.getLogger()
    for existing in [h for h in root.handlers if h.get_name() == HANDLER_NAME]:
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level.upper())

    for name in ("dbos", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # DBOS only installs its own console handler when its logger has none.
    logging.getLogger("dbos").addHandler(logging.NullHandler())
    logging.getLogger("dbos").setLevel(level.upper())
