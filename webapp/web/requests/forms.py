"""What the request pages accept: the request form and the decision forms."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from webapp.core.durations import DURATIONS
from webapp.core.forms import FormModel

FormKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{8,64}$")]


class RequestForm(FormModel):
    resource_id: int = Field(ge=1, le=2**31 - 1)
    duration: str = Field(json_schema_extra={"enum": list(DURATIONS)})  # checked against the resource
    reason: Annotated[str, StringConstraints(min_length=10, max_length=1000)]
    form_key: FormKey  # one per rendering of the form: a form sent twice makes one request


class DecisionForm(FormModel):
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""


class RejectForm(FormModel):
    comment: Annotated[str, StringConstraints(min_length=3, max_length=1000)]


class RevokeForm(FormModel):
    note: Annotated[str, StringConstraints(max_length=500)] = ""
