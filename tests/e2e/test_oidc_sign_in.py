"""Sign-in through the identity provider's own login page, in Chromium (issue 14): a real
OpenID provider (panva's oidc-provider, tests/support/oidc_provider.py) on loopback, the sign-in
button, the provider's form, and back signed in where the person was going; sign-out offers to
leave the provider too. The sign-in page with the provider's button passes axe."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from support import oidc_provider
from support.browser import describe_violations, run_axe
from support.oidc_provider import OpenIdProvider
from support.receivers import free_port

pytestmark = pytest.mark.skipif(not oidc_provider.available(), reason="the test OpenID provider is not installed "
                                "(node, and `npm ci` in tests/support/oidc: support.oidc_provider.install())")
ALICE = {"email": "alice@example.com", "email_verified": True, "name": "Alice Doe",
         "groups": ["gatehouse-approvers"], "department": "Security", "title": "Analyst"}


def test_sign_in_through_the_providers_own_page(serve: Any, open_page: Any, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    client = {"client_id": "gatehouse", "client_secret": "e2e-secret", "redirect_uris": [f"{base}/auth/callback"],
              "post_logout_redirect_uris": [f"{base}/login"]}
    with OpenIdProvider(tmp_path, clients=[client], accounts={"alice": ALICE}) as provider:
        server = serve(port=port, base_url=base, oidc_issuer=provider.issuer, oidc_client_id="gatehouse",
                       oidc_client_secret="e2e-secret", oidc_scopes="openid email profile groups",
                       oidc_provider_name="Example SSO")
        visitor = open_page(server)
        page = visitor.page
        # The provider's login page imports a web font; nothing leaves loopback.
        page.context.route(lambda url: urlsplit(url).hostname not in ("127.0.0.1", "::1"), lambda route: route.abort())
        page.goto(f"{base}/approvals")
        page.wait_for_url(f"{base}/login?next=%2Fapprovals")
        violations = run_axe(visitor)
        assert not violations, describe_violations("sign-in page with the provider's button", violations)

        page.get_by_role("link", name="Sign in with Example SSO").click()
        page.wait_for_url(f"{provider.issuer}/**")
        page.locator("input[name=login]").fill("alice")
        page.locator("input[type=password]").fill("anything")
        page.locator("button[type=submit]").click()
        page.wait_for_url(f"{base}/approvals")
        assert page.get_by_role("heading", level=1).inner_text().startswith("Waiting for")
        assert "Alice Doe" in page.locator("header").inner_text()

        page.get_by_role("button", name="Sign out").click()
        page.wait_for_url(f"{base}/login?signed_out=1")
        leave = page.get_by_role("link", name="Also sign out of Example SSO")
        assert leave.get_attribute("href", timeout=1000).startswith(provider.discovery["end_session_endpoint"])  # type: ignore[union-attr]
        visitor.assert_clean(allow=(re.escape(f"[error] {provider.issuer}/interaction/"),))  # its blocked font
