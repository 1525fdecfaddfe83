"""What Gatehouse says back to Slack when someone clicks Approve or Reject: the reject form (a
modal asking for the reason), the message that replaces the original once a decision is made,
and the explanation only the clicker sees when nothing changed.

Plain dicts in Block Kit's shapes, built from the click's payload; no I/O here. The buttons
themselves are part of the approver's message (webapp.services.notifications.slack_payload).
"""

from __future__ import annotations

import json
from typing import Any

from webapp.services.access import DecisionOutcome

REJECT_CALLBACK = "gatehouse.reject"  # the modal's callback_id
REASON_BLOCK = "reason"
REASON_ACTION = "reason_input"
PAST = {"approve": "approved", "reject": "rejected"}


def ephemeral(text: str) -> dict[str, Any]:
    """A reply only the person who clicked sees; the original message stays as it is."""
    return {"response_type": "ephemeral", "replace_original": False, "text": text}


def decided(original: list[dict[str, Any]], *, request_id: int, kind: str, who: str, outcome: DecisionOutcome,
            link: str) -> dict[str, Any]:
    """The original message without its buttons, plus who decided and what it did. An approval
    that is one of several needed says how many are in."""
    if outcome["status"] == "requested":
        line = f"{who} approved request #{request_id}: {outcome['approvals']} of {outcome['required']} approvals."
    else:
        line = f"{who} {PAST.get(kind, kind)} request #{request_id}; it is now {outcome['status']}."
    kept = [block for block in original if block.get("type") != "actions"]
    footer = {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{escape(line)} <{link}|Open the request>"}]}
    return {"replace_original": True, "text": line, "blocks": [*kept, footer]}


METADATA_MAX = 3000  # Slack's limit on a view's private_metadata


def reject_modal(request_id: int, resource: str, response_url: str, original: list[dict[str, Any]]) -> dict[str, Any]:
    """The form that asks why (the requester reads the reason). Slack sends it back as a
    view_submission with `private_metadata`, which says which request, where to reply, and
    (when it fits) the clicked message's blocks, which the reply keeps."""
    metadata = json.dumps({"request_id": request_id, "response_url": response_url, "original": original})
    if len(metadata) > METADATA_MAX:
        metadata = json.dumps({"request_id": request_id, "response_url": response_url})
    return {
        "type": "modal",
        "callback_id": REJECT_CALLBACK,
        "private_metadata": metadata,
        "title": {"type": "plain_text", "text": f"Reject request #{request_id}"[:24]},
        "submit": {"type": "plain_text", "text": "Reject"},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [{
            "type": "input", "block_id": REASON_BLOCK,
            "label": {"type": "plain_text", "text": f"Why reject {resource}?"[:2000]},
            "element": {"type": "plain_text_input", "action_id": REASON_ACTION, "multiline": True,
                        "min_length": 3, "max_length": 1000},
        }],
    }


def escape(text: str) -> str:
    """Slack's mrkdwn reserves &, < and >."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
