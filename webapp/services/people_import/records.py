"""One randomuser.me record in, one flat `imported_people` row out, or `InvalidRecord`.

The checks are the ones a database would otherwise make fail a whole chunk, plus the
ones the issue names: a login uuid, a plausible email, coordinates on the globe, and the
right JSON type for every field. The randomuser format's own quirks are accepted:
postcodes are numbers or strings, coordinates come as strings, `id.value` may be null.
Every text column's limit is read from the model, so the two cannot disagree.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from webapp.core.emails import EMAIL_PATTERN
from webapp.core.models import ImportedPerson

MAX_AGE = 200
_LIMITS: dict[str, int] = {
    column.name: column.type.length  # type: ignore[attr-defined]
    for column in ImportedPerson.__table__.columns  # type: ignore[attr-defined]
    if getattr(column.type, "length", None)
}

# (column, path in the record, required non-empty)
_TEXT_PATHS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("gender", ("gender",), False),
    ("name_title", ("name", "title"), False),
    ("name_first", ("name", "first"), True),
    ("name_last", ("name", "last"), True),
    ("street_name", ("location", "street", "name"), False),
    ("city", ("location", "city"), False),
    ("state", ("location", "state"), False),
    ("country", ("location", "country"), False),
    ("timezone_offset", ("location", "timezone", "offset"), False),
    ("timezone_description", ("location", "timezone", "description"), False),
    ("login_username", ("login", "username"), True),
    ("login_password", ("login", "password"), False),
    ("login_salt", ("login", "salt"), False),
    ("login_md5", ("login", "md5"), False),
    ("login_sha1", ("login", "sha1"), False),
    ("login_sha256", ("login", "sha256"), False),
    ("phone", ("phone",), False),
    ("cell", ("cell",), False),
    ("id_name", ("id", "name"), False),
    ("picture_large", ("picture", "large"), False),
    ("picture_medium", ("picture", "medium"), False),
    ("picture_thumbnail", ("picture", "thumbnail"), False),
    ("nat", ("nat",), True),
)
# The same, precomputed for the hot loop: (column, parent path, key, dotted path, required, limit)
_TEXT_FIELDS = tuple(
    (column, ".".join(path[:-1]), path[-1], ".".join(path), required, _LIMITS.get(column, 10**9))
    for column, path, required in _TEXT_PATHS
)
_PARENTS = (("name",), ("location",), ("location", "street"), ("location", "timezone"),
            ("location", "coordinates"), ("login",), ("dob",), ("registered",), ("id",), ("picture",))
_MISSING = object()


class InvalidRecord(ValueError):
    """Why a record cannot be imported, in one line naming the field."""


def _dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def _lookup(record: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = record
    for depth, key in enumerate(path):
        if not isinstance(value, dict):
            raise InvalidRecord(f"{_dotted(path[:depth])}: expected an object")
        if key not in value:
            raise InvalidRecord(f"{_dotted(path)}: missing")
        value = value[key]
    return value


def _text(column: str, value: Any, where: str, *, required: bool) -> str:
    if not isinstance(value, str):
        raise InvalidRecord(f"{where}: expected a string, got {_type_name(value)}")
    value = value.strip()
    if required and not value:
        raise InvalidRecord(f"{where}: empty")
    if "\x00" in value:
        raise InvalidRecord(f"{where}: contains a NUL character")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRecord(f"{where}: not valid Unicode text (a lone surrogate)") from None
    limit = _LIMITS.get(column)
    if limit is not None and len(value) > limit:
        raise InvalidRecord(f"{where}: longer than {limit} characters")
    return value


def _integer(value: Any, where: str, *, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRecord(f"{where}: expected a whole number, got {_type_name(value)}")
    if not low <= value <= high:
        raise InvalidRecord(f"{where}: {value} is out of range")
    return value


def _coordinate(value: Any, where: str, limit: float) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRecord(f"{where}: expected a number, got {_type_name(value)}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidRecord(f"{where}: {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(number) or not -limit <= number <= limit:
        raise InvalidRecord(f"{where}: {str(value)[:40]} is not between -{limit:g} and {limit:g}")
    return number


def _timestamp(value: Any, where: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidRecord(f"{where}: expected an ISO 8601 date, got {_type_name(value)}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecord(f"{where}: {value[:40]!r} is not an ISO 8601 date") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


_FAST_COLUMNS = tuple(column for column, *_ in _TEXT_PATHS) + ("email",)
_FAST_LIMITS = tuple(_LIMITS[column] for column in _FAST_COLUMNS)
_FAST_REQUIRED = tuple(i for i, (_c, _p, required) in enumerate(_TEXT_PATHS) if required) + (len(_TEXT_PATHS),)
_CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_EDGE_SPACE = re.compile(r"\s\x01|\x01\s|^\s|\s$")


def _fast_row(record: Any) -> dict[str, Any] | None:
    """The row of a record with nothing unusual about it, checked in bulk; None when
    anything looks off, and `_careful_row` then finds the exact reason (or accepts it)."""
    try:
        name, location, login = record["name"], record["location"], record["login"]
        street, coordinates, timezone = location["street"], location["coordinates"], location["timezone"]
        dob, registered, ident, picture = record["dob"], record["registered"], record["id"], record["picture"]
        texts = (record["gender"], name["title"], name["first"], name["last"], street["name"], location["city"],
                 location["state"], location["country"], timezone["offset"], timezone["description"],
                 login["username"], login["password"], login["salt"], login["md5"], login["sha1"],
                 login["sha256"], record["phone"], record["cell"], ident["name"], picture["large"],
                 picture["medium"], picture["thumbnail"], record["nat"], record["email"])
        login_uuid, number, postcode = login["uuid"], street["number"], location["postcode"]
        latitude, longitude = coordinates["latitude"], coordinates["longitude"]
        dob_date, dob_age, registered_date, registered_age = dob["date"], dob["age"], registered["date"], registered["age"]
        id_value = ident["value"]
        joined = "\x01".join(texts)
    except (KeyError, TypeError):
        return None
    if ("\x00" in joined or _EDGE_SPACE.search(joined)
            or not all(map(int.__le__, map(len, texts), _FAST_LIMITS))
            or not all(texts[i] for i in _FAST_REQUIRED)):
        return None
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:
            return None
    if (type(login_uuid) is not str or not _CANONICAL_UUID.fullmatch(login_uuid)
            or not EMAIL_PATTERN.match(texts[-1])
            or not (number is None or type(number) is int) or type(dob_age) is not int
            or type(registered_age) is not int or not 0 <= dob_age <= MAX_AGE or not 0 <= registered_age <= MAX_AGE
            or type(dob_date) is not str or type(registered_date) is not str
            or not (type(postcode) is str or type(postcode) is int)
            or not (id_value is None or type(id_value) is str)):
        return None
    postcode = str(postcode)
    if len(postcode) > 32 or postcode != postcode.strip() or "\x00" in postcode:
        return None
    if id_value is not None and (len(id_value) > 100 or id_value != id_value.strip() or "\x00" in id_value):
        return None
    try:
        lat, lon = float(latitude), float(longitude)
        born, joined_on = datetime.fromisoformat(dob_date), datetime.fromisoformat(registered_date)
    except (TypeError, ValueError):
        return None
    if type(latitude) is bool or type(longitude) is bool or not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        return None  # NaN fails the comparisons too
    if number is not None and not -(2**31) <= number < 2**31:
        return None
    row = dict(zip(_FAST_COLUMNS, texts))
    row["login_uuid"] = login_uuid
    row["street_number"], row["postcode"], row["latitude"], row["longitude"] = number, postcode, lat, lon
    row["dob_date"] = born.replace(tzinfo=UTC) if born.tzinfo is None else born.astimezone(UTC)
    row["registered_date"] = joined_on.replace(tzinfo=UTC) if joined_on.tzinfo is None else joined_on.astimezone(UTC)
    row["dob_age"], row["registered_age"], row["id_value"] = dob_age, registered_age, id_value
    return row


def person_row(record: Any) -> dict[str, Any]:
    """The `imported_people` columns for one record (without ids and timestamps), or
    InvalidRecord naming the first thing wrong with it."""
    return _fast_row(record) or _careful_row(record)


def _careful_row(record: Any) -> dict[str, Any]:
    """person_row, one field at a time, with the reason for the first refusal."""
    if not isinstance(record, dict):
        raise InvalidRecord(f"record: expected an object, got {_type_name(record)}")
    parents: dict[str, dict[str, Any]] = {"": record}
    for path in _PARENTS:
        value = _lookup(record, path)
        if not isinstance(value, dict):
            raise InvalidRecord(f"{_dotted(path)}: expected an object, got {_type_name(value)}")
        parents[".".join(path)] = value

    raw_uuid = _lookup(record, ("login", "uuid"))
    if not isinstance(raw_uuid, str) or not raw_uuid.strip():
        raise InvalidRecord("login.uuid: missing" if raw_uuid in (None, "") else
                            f"login.uuid: expected a string, got {_type_name(raw_uuid)}")
    try:
        login_uuid = str(uuid.UUID(raw_uuid.strip()))
    except ValueError:
        raise InvalidRecord(f"login.uuid: {raw_uuid[:40]!r} is not a UUID") from None

    row: dict[str, Any] = {"login_uuid": login_uuid}
    for column, parent, key, where, required, limit in _TEXT_FIELDS:
        value = parents[parent].get(key, _MISSING)
        if (type(value) is str and value and len(value) <= limit and value.isascii() and "\x00" not in value
                and not value[0].isspace() and not value[-1].isspace()):
            row[column] = value  # the common case, checked in one go
        elif value is _MISSING:
            raise InvalidRecord(f"{where}: missing")
        else:
            row[column] = _text(column, value, where, required=required)

    email = _text("email", _lookup(record, ("email",)), "email", required=True)
    if not EMAIL_PATTERN.match(email):
        raise InvalidRecord(f"email: {email[:60]!r} is not an email address")
    row["email"] = email

    street_number = _lookup(record, ("location", "street", "number"))
    row["street_number"] = None if street_number is None else _integer(
        street_number, "location.street.number", low=-(2**31), high=2**31 - 1)
    postcode = _lookup(record, ("location", "postcode"))
    if isinstance(postcode, bool) or not isinstance(postcode, str | int):
        raise InvalidRecord(f"location.postcode: expected a string or a number, got {_type_name(postcode)}")
    row["postcode"] = _text("postcode", str(postcode), "location.postcode", required=False)

    row["latitude"] = _coordinate(_lookup(record, ("location", "coordinates", "latitude")),
                                  "location.coordinates.latitude", 90.0)
    row["longitude"] = _coordinate(_lookup(record, ("location", "coordinates", "longitude")),
                                   "location.coordinates.longitude", 180.0)

    for part in ("dob", "registered"):
        row[f"{part}_date"] = _timestamp(_lookup(record, (part, "date")), f"{part}.date")
        row[f"{part}_age"] = _integer(_lookup(record, (part, "age")), f"{part}.age", low=0, high=MAX_AGE)

    id_value = _lookup(record, ("id", "value"))
    row["id_value"] = None if id_value is None else _text("id_value", id_value, "id.value", required=False)
    return row


def display_name(row: dict[str, Any]) -> str:
    """How an imported person is named on their `User`: first and last name."""
    return f"{row['name_first']} {row['name_last']}".strip()[:200]
