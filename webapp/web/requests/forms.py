"""What the request pages accept: the request form and the decision forms."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, StringConstraints, ValidationInfo, field_validator

from webapp.core.durations import DURATIONS
from webapp.core.forms import FormModel

FormKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9-]{8,64}$")]


class RequestForm(FormModel):
    resource_id: int = Field(ge=1, le=2**31 - 1)
    duration: str = Field(json_schema_extra={"enum": list(DURATIONS)})  # checked against the resource
    reason: Annotated[str, StringConstraints(min_length=10, max_length=1000)]
    form_key: FormKey  # one per rendering of the form: a form sent twice makes one request
    extends_grant_id: int | None = Field(default=None, ge=1, le=2**31 - 1)  # the extend form's grant


class DecisionForm(FormModel):
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""


class RejectForm(FormModel):
    comment: Annotated[str, StringConstraints(min_length=3, max_length=1000)]


class RevokeForm(FormModel):
    note: Annotated[str, StringConstraints(max_length=500)] = ""


MAX_BULK = 100


class BulkDecisionForm(FormModel):
    """Several requests decided at once from the approvals queue; a rejection needs its reason."""

    ids: list[Annotated[int, Field(ge=1, le=2**31 - 1)]] = Field(default_factory=list, validate_default=True)
    decision: Literal["approve", "reject"]
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""

    @field_validator("ids")
    @classmethod
    def _some(cls, ids: list[int]) -> list[int]:
        if not ids:
            raise ValueError("Choose at least one request.")
        if len(ids) > MAX_BULK:
            raise ValueError(f"Choose at most {MAX_BULK} requests at a time.")
        return list(dict.fromkeys(ids))

    @field_validator("comment")
    @classmethod
    def _reason_to_reject(cls, comment: str, info: ValidationInfo) -> str:
        if info.data.get("decision") == "reject" and len(comment) < 3:
            raise ValueError("Say why (at least 3 characters): the requesters will read it.")
        return comment
