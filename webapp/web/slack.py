"""`POST /slack/actions`: Slack's interactivity request URL, for the Approve and Reject buttons
on approvers' messages.

Public, and authenticated by Slack's signature alone (slack_sdk's verifier: the signing
secret over the timestamp and the body; a timestamp more than 5 minutes off is a replay): a
forged or stale request gets a 401 and changes nothing. The Slack user is mapped to a
Gatehouse person by their profile's email (webapp.services.slack_people); the decision then
follows the web's rules through the request's workflow (webapp.workflows.slack). Approve
decides at once; Reject opens a modal that asks why, and its submission decides. Whatever
cannot be done is explained to the clicker alone (an ephemeral message, or an error in the
modal), and changes nothing.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.signature import SignatureVerifier
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from webapp.config import Settings
from webapp.core.errors import Refusal
from webapp.core.models import AccessRequest, Resource
from webapp.services.access import check_decision
from webapp.services.identity import Principal
from webapp.services.slack_messages import REASON_ACTION, REASON_BLOCK, REJECT_CALLBACK, ephemeral, reject_modal
from webapp.services.slack_people import SlackDirectory, person_by_email
from webapp.web.database import in_session
from webapp.web.security import Access, guarded_route
from webapp.workflows.slack import decide_from_slack, post_reply

log = logging.getLogger(__name__)
PATH = "/slack/actions"
MAX_BODY = 64 * 1024  # a click's payload is a few KB


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"error": text, "status": status}, status_code=status)


def signed_by_slack(secret: str, body: bytes, headers: Any) -> bool:
    try:
        return SignatureVerifier(secret).is_valid_request(body, dict(headers))
    except ValueError:  # a timestamp that is not a number
        return False


def _directory(request: Request) -> SlackDirectory:
    """One per app, with the app's Web API client: its cache spares Slack's API a call per click."""
    directory: SlackDirectory | None = getattr(request.app.state, "slack_directory", None)
    if directory is None:
        settings: Settings = request.app.state.settings
        client = WebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url, timeout=5)
        directory = request.app.state.slack_directory = SlackDirectory(client)
    return directory


async def _person(request: Request, slack_user_id: str) -> Principal | str:
    """The Gatehouse person behind the Slack user, or why there is none (to tell them)."""
    try:
        email = await run_in_threadpool(_directory(request).email_of, slack_user_id)
    except SlackApiError as error:
        log.warning("slack users.info failed", extra={"error": str(error.response.get("error"))})
        return "Gatehouse could not ask Slack who you are just now; try again, or decide on the request's page."
    person = await in_session(request, lambda s: person_by_email(s, email)) if email else None
    if person is None:
        return ("Your Slack profile's email matches no active Gatehouse account, so you cannot decide from Slack. "
                "Ask an admin, or decide on the request's page.")
    return person


def from_slack(settings: Settings, response_url: str) -> bool:
    """Replies go only where Slack's response URLs point (SLACK_RESPONSE_URL_PREFIX)."""
    return response_url.startswith(settings.slack_response_url_prefix)


def _reply_later(settings: Settings, response_url: str, text: str) -> Response:
    """Acknowledge now; tell the clicker `text` (only them) once the answer is sent."""
    if not from_slack(settings, response_url):
        return Response(status_code=200)
    return Response(status_code=200, background=BackgroundTask(_post_quietly, response_url, ephemeral(text)))


async def _post_quietly(response_url: str, body: dict[str, Any]) -> None:
    try:
        await run_in_threadpool(post_reply, response_url, body)
    except Exception:  # the explanation is a courtesy: nothing changed either way
        log.warning("could not post an explanation to slack", exc_info=True)


async def slack_actions(request: Request) -> Response:
    """One interaction: a button on an approver's message, or the reject modal's submission."""
    settings: Settings = request.app.state.settings
    if not settings.slack_signing_secret:
        return _error(404, "Decisions from Slack are not set up here (SLACK_SIGNING_SECRET).")
    body = await request.body()
    if len(body) > MAX_BODY:
        return _error(413, "Too large for a Slack interaction.")
    if not signed_by_slack(settings.slack_signing_secret, body, request.headers):
        return _error(401, "Not signed by Slack, or signed more than 5 minutes ago: nothing was done.")
    try:
        payload = json.loads(parse_qs(body.decode())["payload"][0])
        kind = payload["type"]
        slack_user = str(payload["user"]["id"])
    except (KeyError, IndexError, TypeError, ValueError, UnicodeDecodeError):
        return _error(400, "Expected Slack's form field `payload` holding an interaction.")
    if kind == "block_actions":
        return await _button(request, settings, payload, slack_user)
    if kind == "view_submission" and (payload.get("view") or {}).get("callback_id") == REJECT_CALLBACK:
        return await _reject_submitted(request, settings, payload, slack_user)
    return Response(status_code=200)  # another interaction (a modal closed, say): nothing to do


async def _button(request: Request, settings: Settings, payload: dict[str, Any], slack_user: str) -> Response:
    try:
        action = payload["actions"][0]
        decision, request_id = action["action_id"], int(action["value"])
        response_url = str(payload["response_url"])
    except (KeyError, IndexError, TypeError, ValueError):
        return _error(400, "Expected a Gatehouse button with a request id.")
    if decision not in ("approve", "reject") or not 1 <= request_id < 2**31:
        return _error(400, "Expected a Gatehouse button with a request id.")
    person = await _person(request, slack_user)
    if isinstance(person, str):
        return _reply_later(settings, response_url, person)
    if not from_slack(settings, response_url):
        return _error(400, "The response_url is not Slack's (SLACK_RESPONSE_URL_PREFIX).")
    original = (payload.get("message") or {}).get("blocks") or []
    try:
        if decision == "approve":
            await decide_from_slack(request.app.state.db, person, request_id, "approve", "",
                                    response_url=response_url, original=original)
            return Response(status_code=200)
        resource = await in_session(request, lambda s: _pending_resource(s, person, request_id))
    except Refusal as refusal:
        return _reply_later(settings, response_url, f"Nothing changed: {refusal}")
    modal = reject_modal(request_id, resource, response_url, original)
    try:
        await run_in_threadpool(lambda: _directory(request).client.views_open(
            trigger_id=str(payload.get("trigger_id", "")), view=modal))
    except SlackApiError as error:
        log.warning("slack views.open failed", extra={"error": str(error.response.get("error"))})
        return _reply_later(settings, response_url, "Slack did not open the form; reject on the request's page.")
    return Response(status_code=200)


def _pending_resource(session: Session, person: Principal, request_id: int) -> str:
    """The name of the resource of a request `person` may reject now (AccessError if not)."""
    check_decision(session, person, request_id, "reject")
    return str(session.scalar(sa.select(Resource.name).join(AccessRequest, AccessRequest.resource_id == Resource.id)
                              .where(AccessRequest.id == request_id)))


async def _reject_submitted(request: Request, settings: Settings, payload: dict[str, Any], slack_user: str) -> Response:
    view = payload["view"]
    try:
        meta = json.loads(view["private_metadata"])
        request_id, response_url = int(meta["request_id"]), str(meta["response_url"])
        original = list(meta.get("original") or [])
        reason = str(view["state"]["values"][REASON_BLOCK][REASON_ACTION]["value"] or "").strip()
    except (KeyError, TypeError, ValueError):
        return _error(400, "Expected Gatehouse's reject form.")
    if len(reason) < 3 or len(reason) > 1000:
        return _modal_error("Say why in 3 to 1,000 characters: the requester will read it.")
    if not from_slack(settings, response_url):
        return _error(400, "The response_url is not Slack's (SLACK_RESPONSE_URL_PREFIX).")
    person = await _person(request, slack_user)
    if isinstance(person, str):
        return _modal_error(person)
    try:
        await decide_from_slack(request.app.state.db, person, request_id, "reject", reason,
                                response_url=response_url, original=original)
    except Refusal as refusal:
        return _modal_error(f"Nothing changed: {refusal}")
    return Response(status_code=200)  # an empty answer closes the modal


def _modal_error(text: str) -> JSONResponse:
    """Shown under the reason field, in the modal, to the person who submitted it."""
    return JSONResponse({"response_action": "errors", "errors": {REASON_BLOCK: text[:150]}})


routes = [guarded_route(PATH, slack_actions, access=Access.public, methods=["POST"], signed=True)]
