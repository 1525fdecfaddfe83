"""Form input: parse with a pydantic model, or collect readable per-field errors.

Every value arrives as untrusted text. A model bounds lengths and types, so hostile
input becomes a 422 with messages tied to fields, never an exception deeper down.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

M = TypeVar("M", bound=BaseModel)


class FormModel(BaseModel):
    """Base for forms: strips whitespace and ignores fields it does not know (csrf_token)."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="ignore")


class FormInvalid(Exception):
    """The submitted values and, per field, what is wrong with them."""

    def __init__(self, errors: dict[str, str], values: Mapping[str, Any]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
        self.values = {k: v for k, v in values.items() if isinstance(v, str) and k != "csrf_token"}


def _message(error: Any) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "missing":
        return "This field is required."
    if kind == "string_too_short":
        return f"Enter at least {ctx.get('min_length')} characters."
    if kind == "string_too_long":
        return f"Enter at most {ctx.get('max_length')} characters."
    if kind in ("int_parsing", "int_from_float"):
        return "Enter a whole number."
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        return "Enter a number in the allowed range."
    if kind in ("enum", "literal_error"):
        return "Choose one of the listed options."
    message = str(error.get("msg", "Invalid value."))
    return message.removeprefix("Value error, ")


def parse_form(model: type[M], values: Mapping[str, Any]) -> M:
    """Validate `values` (a form or query mapping) into `model`, or raise FormInvalid. A field
    sent several times (checkboxes) arrives as a list when `values` holds one."""
    data = {k: v for k, v in values.items()
            if isinstance(v, str) or (isinstance(v, list) and all(isinstance(item, str) for item in v))}
    unprintable = {k: "This contains characters that are not allowed." for k, v in data.items()
                   if any("\x00" in item for item in ([v] if isinstance(v, str) else v))}
    if unprintable:  # PostgreSQL cannot store NUL in text; refuse it here, for every field
        raise FormInvalid(unprintable, data)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "__all__"
            errors.setdefault(field, _message(error))
        raise FormInvalid(errors, data) from None


def parse_query(model: type[M], values: Mapping[str, Any]) -> M:
    """Like parse_form, but lenient as links should be: a bad parameter falls back to its default."""
    kept = dict(values)
    while True:
        try:
            return parse_form(model, kept)
        except FormInvalid as invalid:
            remaining = {k: v for k, v in kept.items() if k not in invalid.errors}
            if len(remaining) == len(kept):  # the defaults themselves are invalid: a bug, say so
                raise
            kept = remaining


def plain_int(text: str | None, *, max_digits: int = 18) -> int | None:
    """`text` as a non-negative integer when it is ASCII digits only, else None. (`str.isdigit`
    also accepts "²" and "١", which `int()` then refuses or reads as another number.)"""
    if not text or len(text) > max_digits or not (text.isascii() and text.isdigit()):
        return None
    return int(text)


def safe_next(target: str | None, default: str = "/") -> str:
    """Only same-site paths: no scheme, no host, no protocol-relative `//`."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target or "\r" in target:
        return default
    return target


def in_utc(value: datetime) -> datetime:
    """A form's time in UTC; one without a zone (what a datetime-local field sends) is UTC.
    A validator's ValueError when the zone pushes it past the years datetime can hold."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("Enter a date and time between the years 1 and 9999.") from None


class TimeRange(FormModel):
    """`since` (inclusive) and `until` (exclusive) from datetime-local fields, in UTC."""

    since: datetime | None = None
    until: datetime | None = None

    @field_validator("since", "until")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else in_utc(value)

    def form_values(self) -> dict[str, str]:
        """The filter form's fields as the form shows them (datetime-local: no zone, minutes)."""
        values = {name: "" if getattr(self, name) is None else str(getattr(self, name))
                  for name in type(self).model_fields if name not in ("since", "until")}
        for name in ("since", "until"):
            moment = getattr(self, name)
            values[name] = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M") if moment else ""
        return values
