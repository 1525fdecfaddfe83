"""Email addresses as Gatehouse stores them: one plausible shape, compared in lower case."""

from __future__ import annotations

import re

EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}\.[^@\s]{2,}$")


def normalise_email(email: str) -> str:
    return email.strip().lower()
