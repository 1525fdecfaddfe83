"""Reading what a route was given: ids in the path."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request

MAX_ID = 2**31 - 1  # the id columns are INTEGER: PostgreSQL refuses to compare them with more


def path_id(request: Request, name: str, what: str = "record") -> int:
    """The integer path parameter `name` (declared `{name:int}`); 404 outside the ids a row can have."""
    value = request.path_params[name]
    if not isinstance(value, int) or not 0 < value <= MAX_ID:
        raise HTTPException(404, f"No such {what}.")
    return value
