"""The request pages: ask for access (submit), follow and decide one request (decide, and
email_links for emailed decision links), and the lists (lists, with the table's links and
caption in table)."""

from __future__ import annotations

from webapp.web.requests.bulk import decide_selected
from webapp.web.requests.decide import approve, cancel, reject, request_page, revoke_grant
from webapp.web.requests.email_links import decide_by_link, link_page
from webapp.web.requests.lists import (
    approvals_page,
    my_access_page,
    my_requests_page,
    pending_count,
    requests_page,
)
from webapp.web.requests.submit import new_request_page, submit_request
from webapp.web.security import Access, guarded_route

routes = [
    guarded_route("/requests/new", new_request_page, access=Access.member),
    guarded_route("/requests", requests_page, access=Access.member),
    guarded_route("/requests", submit_request, access=Access.member, methods=["POST"]),
    guarded_route("/requests/{request_id:int}", request_page, access=Access.member),
    guarded_route("/requests/{request_id:int}/approve", approve, access=Access.approver, methods=["POST"]),
    guarded_route("/requests/{request_id:int}/reject", reject, access=Access.approver, methods=["POST"]),
    guarded_route("/requests/{request_id:int}/cancel", cancel, access=Access.member, methods=["POST"]),
    guarded_route("/grants/{grant_id:int}/revoke", revoke_grant, access=Access.admin, methods=["POST"]),
    # Emailed approve and reject links: who may use one is checked against the link (webapp.services.decision_links).
    guarded_route("/decide/{token}", link_page, access=Access.member, browser_only=True),
    guarded_route("/decide/{token}", decide_by_link, access=Access.member, methods=["POST"], browser_only=True),
    guarded_route("/my/requests", my_requests_page, access=Access.member),
    guarded_route("/my/access", my_access_page, access=Access.member),
    guarded_route("/approvals", approvals_page, access=Access.approver),
    guarded_route("/approvals", decide_selected, access=Access.approver, methods=["POST"]),
    guarded_route("/approvals/count", pending_count, access=Access.approver),
]
