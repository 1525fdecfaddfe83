"""The errors a person can act on, raised where a rule refuses and answered in one place.

    Refusal              a rule says no; `status_code` (4xx) says how, `field` names the
      |                  form field at fault, if one is
      +-- AccessError          webapp.services.access: asking, deciding, revoking, seeing
      +-- PlanRefused          webapp.services.batches: a batch that cannot be planned
      +-- ImportRefused        webapp.services.people_import.jobs: an import's actions
      +-- ActionRefused        webapp.workflows.control: cancel, resume, fork, schedules
      +-- NotAnsweredYet       a workflow has the work durably but has not answered yet (503)

The web maps every Refusal to an answer (webapp.web.errors): JSON with `fields`, an htmx
toast, or an error page. Form validation has its own (webapp.core.forms.FormInvalid).
"""

from __future__ import annotations


class Refusal(Exception):
    """A rule refused what was asked; the message is a sentence for the person who asked."""

    status_code = 409

    def __init__(self, message: str, status_code: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        if status_code is not None:
            self.status_code = status_code
        self.field = field


class NotAnsweredYet(Refusal):
    """A workflow has the submission or the message (durably) but did not say what it did
    in the time a page waits; it will. The message says what to do meanwhile."""

    status_code = 503
