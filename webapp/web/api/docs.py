"""`/openapi.json` and `/docs`: the JSON API's spec (webapp.web.api.spec), and the same spec
as a page people read: every operation with its method, path, summary, who may call it,
parameters, form fields and answers, then every answer shape. Server-rendered, no script.

Both are public: they describe the API and reveal no data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.web.api.spec import FORM_MEDIA_TYPE, TAGS, openapi_spec
from webapp.web.rendering import render
from webapp.web.security import Access, guarded_route

Text = list[tuple[str, str | None]]  # pieces of text, each with the anchor it links to (or None)
Prose = list[list[tuple[str, bool]]]  # paragraphs of pieces, each marked as code or not
ACCESS_TEXT = {"public": "Anyone", "member": "Any signed-in person", "approver": "Approvers and admins",
               "admin": "Admins"}


@dataclass(frozen=True)
class FieldRow:
    name: str
    type: Text
    required: bool
    rules: str
    description: str


@dataclass(frozen=True)
class AnswerRow:
    status: str
    description: Prose
    media_type: str
    type: Text
    headers: str


@dataclass(frozen=True)
class OperationView:
    anchor: str
    method: str
    path: str
    summary: Prose
    description: Prose
    access: str
    path_parameters: list[FieldRow]
    query_parameters: list[FieldRow]
    body: list[FieldRow]
    body_media_type: str
    answers: list[AnswerRow]


@dataclass(frozen=True)
class TagView:
    name: str
    description: str
    operations: list[OperationView]


@dataclass(frozen=True)
class ShapeView:
    name: str
    anchor: str
    description: Prose
    fields: list[FieldRow]
    values: list[str]  # an enumeration's values (then no fields)


def schema_anchor(name: str) -> str:
    return f"shape-{name}"


def prose(text: str) -> Prose:
    """Paragraphs, with `backticked` pieces marked as code."""
    return [[(piece, i % 2 == 1) for i, piece in enumerate(paragraph.split("`")) if piece]
            for paragraph in text.split("\n\n") if paragraph.strip()]


def type_text(schema: dict[str, Any]) -> Text:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        return [(name, schema_anchor(name))]
    if "anyOf" in schema:
        text: Text = []
        for n, alternative in enumerate(schema["anyOf"]):
            text += ([(" or ", None)] if n else []) + type_text(alternative)
        return text
    if "const" in schema:
        return [(json.dumps(schema["const"]), None)]
    if "enum" in schema:
        return [("one of " + ", ".join(str(v) for v in schema["enum"]), None)]
    kind = schema.get("type")
    if kind == "array":
        return [("array of ", None), *type_text(schema.get("items", {}))]
    if kind == "object":
        values = schema.get("additionalProperties")
        if isinstance(values, dict) and values:
            return [("object of name → ", None), *type_text(values)]
        return [("object", None)]
    if kind is None:
        return [("any JSON", None)]
    return [(f"{kind} ({schema['format']})" if "format" in schema else str(kind), None)]


def _range(low: Any, high: Any, unit: str = "") -> str | None:
    if low is not None and high is not None:
        return f"{low} to {high}{unit}"
    if low is not None:
        return f"at least {low}{unit}"
    if high is not None:
        return f"at most {high}{unit}"
    return None


def rules(schema: dict[str, Any]) -> str:
    found = [
        _range(schema.get("minimum"), schema.get("maximum")),
        _range(schema.get("minLength"), schema.get("maxLength"), " characters"),
        f"matches {schema['pattern']}" if "pattern" in schema else None,
        f"default {json.dumps(schema['default'])}" if "default" in schema and schema["default"] not in ("", {}) else None,
    ]
    return "; ".join(rule for rule in found if rule)


def _field(name: str, schema: dict[str, Any], required: bool) -> FieldRow:
    return FieldRow(name, type_text(schema), required, rules(schema), schema.get("description", ""))


def _operation(method: str, path: str, op: dict[str, Any]) -> OperationView:
    parameters = op.get("parameters", [])
    body_schema: dict[str, Any] = {}
    body_media_type = ""
    if "requestBody" in op:
        body_media_type, media = next(iter(op["requestBody"]["content"].items()))
        body_schema = media["schema"]
    required = set(body_schema.get("required", []))
    answers = []
    for status, answer in op["responses"].items():
        media_type, media = next(iter(answer.get("content", {}).items()), ("", {}))
        answers.append(AnswerRow(status, prose(answer["description"]), media_type,
                                 type_text(media.get("schema", {})) if media_type else [],
                                 ", ".join(answer.get("headers", {}))))
    return OperationView(
        anchor=op["operationId"], method=method.upper(), path=path, summary=prose(op.get("summary", "")),
        description=prose(op.get("description", "")), access=ACCESS_TEXT[op["x-access"]],
        path_parameters=[_field(p["name"], p["schema"], True) for p in parameters if p["in"] == "path"],
        query_parameters=[_field(p["name"], p["schema"], p.get("required", False))
                          for p in parameters if p["in"] == "query"],
        body=[_field(name, schema, name in required) for name, schema in body_schema.get("properties", {}).items()],
        body_media_type=body_media_type if body_media_type != FORM_MEDIA_TYPE else "form (urlencoded or multipart)",
        answers=answers,
    )


def _shape(name: str, schema: dict[str, Any]) -> ShapeView:
    required = set(schema.get("required", []))
    return ShapeView(name, schema_anchor(name), prose(schema.get("description", "")),
                     [_field(field, sub, field in required) for field, sub in schema.get("properties", {}).items()],
                     [str(v) for v in schema.get("enum", [])])


def docs_view(spec: dict[str, Any]) -> dict[str, Any]:
    """Everything the page shows, in the order it shows it."""
    by_tag: dict[str, list[OperationView]] = {name: [] for name in TAGS}
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            by_tag[op["tags"][0]].append(_operation(method, path, op))
    return {
        "title": spec["info"]["title"], "version": spec["info"]["version"],
        "introduction": prose(spec["info"]["description"]),
        "tags": [TagView(name, TAGS[name], ops) for name, ops in by_tag.items() if ops],
        "shapes": [_shape(name, schema) for name, schema in sorted(spec["components"]["schemas"].items())],
    }


def spec_of(request: Request) -> dict[str, Any]:
    """Built once per app, from its routes and settings."""
    state = request.app.state
    if getattr(state, "openapi", None) is None:
        state.openapi = openapi_spec(request.app.routes, state.settings)
    return state.openapi  # type: ignore[no-any-return]


async def openapi_json(request: Request) -> Response:
    """The JSON API as OpenAPI 3.1."""
    return JSONResponse(spec_of(request))


async def docs_page(request: Request) -> Response:
    """The JSON API, operation by operation, for people."""
    return render(request, "api_docs.html", docs_view(spec_of(request)))


routes = [
    guarded_route("/openapi.json", openapi_json, access=Access.public),
    guarded_route("/docs", docs_page, access=Access.public),
]
