"""A message for the next page: what a form did, shown once after its redirect (it works
without JavaScript: the POST answers 303, the page it leads to shows the message).

The message rides in a short-lived signed cookie; the full page that shows it clears it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

FLASH_COOKIE = "gh_flash"
MAX_AGE_SECONDS = 120
Kind = Literal["ok", "info", "warning", "error"]


@dataclass(frozen=True)
class Flash:
    kind: Kind
    text: str
    link: str | None = None  # the page of what the message is about (a same-site path)
    link_text: str = ""


def _signer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(request.app.state.settings.session_secret, salt="gatehouse.flash")


Link = tuple[str, str]  # (same-site path, link text)


def redirect_with(request: Request, url: str, text: str, kind: Kind = "ok", *, link: Link | None = None) -> Response:
    """303 to `url`, which shows `text` once (with `link`, unless it leads to `url` itself)."""
    return leave_flash(request, RedirectResponse(url, status_code=303), text, kind,
                       link=None if link and link[0] == url.split("?")[0] else link)


def leave_flash(request: Request, response: Response, text: str, kind: Kind = "ok", *,
                link: Link | None = None) -> Response:
    """Set the message on `response` (a redirect, or htmx's HX-Redirect)."""
    data = {"kind": kind, "text": text, **({"link": list(link)} if link else {})}
    response.set_cookie(FLASH_COOKIE, _signer(request).dumps(data), max_age=MAX_AGE_SECONDS,
                        path="/", httponly=True, samesite="lax", secure=request.app.state.settings.https)
    return response


def pending_flash(request: Request) -> Flash | None:
    """The message this browser carries, if it is ours and recent."""
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = _signer(request).loads(raw, max_age=MAX_AGE_SECONDS)
    except BadSignature:
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    text = data.get("text") if isinstance(data, dict) else None
    if kind not in ("ok", "info", "warning", "error") or not isinstance(text, str):
        return None
    match data.get("link"):  # signed by us, so well formed; checked all the same
        case [str(href), str(label)] if href.startswith("/") and not href.startswith("//"):
            return Flash(kind, text, href, label)
    return Flash(kind, text)


def clear_flash(request: Request, response: Response) -> None:
    """Forget the message once a page has shown it."""
    if FLASH_COOKIE in request.cookies:
        response.delete_cookie(FLASH_COOKIE, path="/", secure=request.app.state.settings.https)
