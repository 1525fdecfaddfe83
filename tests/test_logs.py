"""Log lines carry the request id, and inside workflows the workflow id; DBOS's own
lines go through the same handler."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from dbos import DBOS
from starlette.testclient import TestClient

from webapp.core.logging_setup import configure_logging, request_id_var

workflow_log = logging.getLogger("tests.workflow")


@DBOS.workflow()
def logging_workflow() -> str:
    workflow_log.info("inside a workflow")
    return DBOS.workflow_id or ""


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", "json", stream)
    yield stream
    configure_logging("WARNING", "console")


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_the_request_id(captured: io.StringIO) -> None:
    token = request_id_var.set("req-42")
    try:
        logging.getLogger("tests").warning("hello %s", "world", extra={"resource": "vpn"})
    finally:
        request_id_var.reset(token)
    [entry] = [e for e in lines(captured) if e["logger"] == "tests"]
    assert entry["message"] == "hello world"
    assert entry["request_id"] == "req-42"
    assert entry["resource"] == "vpn"
    assert entry["level"] == "warning"


def test_workflow_lines_carry_the_workflow_id_and_dbos_shares_the_handler(
    client: TestClient, captured: io.StringIO
) -> None:
    handle = DBOS.start_workflow(logging_workflow)
    workflow_id = handle.get_result()
    logging.getLogger("dbos").info("a line from DBOS")
    entries = lines(captured)
    [inside] = [e for e in entries if e["message"] == "inside a workflow"]
    assert inside["workflow_id"] == workflow_id
    assert any(e["logger"] == "dbos" and e["message"] == "a line from DBOS" for e in entries)
