"""Talking to the OpenID provider: discovery, the authorization URL (code flow with PKCE),
the code-for-tokens exchange, and the provider's signing keys. Authlib's OAuth 2 client makes
the requests; joserfc reads the keys (webapp.services.oidc checks the token).

Discovery and keys are cached per process: discovery for an hour, keys until a token names
a key id the cache lacks (the provider rotated them), then fetched again at most once a minute.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import AsyncOAuth2Client
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.jwk import KeySet

from webapp.config import Settings
from webapp.services.oidc import OidcRefused, PendingLogin

DISCOVERY_SECONDS = 3600.0
KEYS_REFRESH_SECONDS = 60.0
TIMEOUT = 10.0  # seconds, for every call to the provider
CALLBACK_PATH = "/auth/callback"


class ProviderUnavailable(OidcRefused):
    """The provider could not be reached or answered nonsense: try again later."""

    status_code = 502


class OidcClient:
    """One per app, for the provider in the settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.issuer = str(settings.oidc_issuer).rstrip("/")
        self._discovery: tuple[dict[str, Any], float] | None = None
        self._keys: tuple[KeySet, float] | None = None

    @property
    def redirect_uri(self) -> str:
        return self.settings.base_url.rstrip("/") + CALLBACK_PATH

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT) as client:
                response = await client.get(url, headers={"Accept": "application/json"})
                response.raise_for_status()
                body = response.json()
        except (httpx.HTTPError, ValueError) as error:
            raise ProviderUnavailable(f"The identity provider cannot be reached just now ({type(error).__name__}). "
                                      "Try again in a moment.") from error
        if not isinstance(body, dict):
            raise ProviderUnavailable("The identity provider answered with something that is not JSON.")
        return body

    async def discovery(self) -> dict[str, Any]:
        """The provider's metadata; its issuer must be the one configured (OpenID Discovery 4.3)."""
        if self._discovery is None or self._discovery[1] < time.monotonic():
            metadata = await self._get_json(f"{self.issuer}/.well-known/openid-configuration")
            if str(metadata.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderUnavailable("The identity provider's discovery names another issuer.")
            self._discovery = (metadata, time.monotonic() + DISCOVERY_SECONDS)
        return self._discovery[0]

    async def authorization_url(self, login: PendingLogin) -> str:
        metadata = await self.discovery()
        client = AsyncOAuth2Client(self.settings.oidc_client_id, scope=self.settings.oidc_scopes,
                                   redirect_uri=self.redirect_uri, code_challenge_method="S256")
        url, _state = client.create_authorization_url(
            metadata["authorization_endpoint"], state=login.state, nonce=login.nonce,
            code_verifier=login.code_verifier)
        assert create_s256_code_challenge(login.code_verifier) in url
        return str(url)

    async def exchange(self, code: str, login: PendingLogin) -> dict[str, Any]:
        """The tokens for an authorization code (client_secret_basic, with the PKCE verifier)."""
        metadata = await self.discovery()
        async with AsyncOAuth2Client(self.settings.oidc_client_id, self.settings.oidc_secret(),
                                     redirect_uri=self.redirect_uri, timeout=TIMEOUT,
                                     token_endpoint_auth_method="client_secret_basic") as client:
            try:
                token = await client.fetch_token(metadata["token_endpoint"], grant_type="authorization_code",
                                                 code=code, code_verifier=login.code_verifier)
            except httpx.HTTPError as error:
                raise ProviderUnavailable("The identity provider cannot be reached just now. Try again.") from error
            except (OAuthError, ValueError) as error:  # the provider refused the code, or answered nonsense
                raise OidcRefused(f"The identity provider refused to finish this sign-in ({error}). "
                                  "Sign in again.") from error
        if not isinstance(token, dict) or not token.get("id_token"):
            raise OidcRefused("The identity provider answered without an ID token.")
        return dict(token)

    async def keys(self, kid: str | None) -> KeySet:
        """The provider's signing keys, fetched again when a token names an unknown one."""
        cached = self._keys
        known = cached is not None and (kid is None or any(key.kid == kid for key in cached[0].keys))
        if cached is None or (not known and cached[1] < time.monotonic()):
            metadata = await self.discovery()
            keys = KeySet.import_key_set(await self._get_json(metadata["jwks_uri"]))  # type: ignore[arg-type]
            self._keys = cached = (keys, time.monotonic() + KEYS_REFRESH_SECONDS)
        return cached[0]

    async def end_session_url(self) -> str | None:
        """Where to send someone who wants to leave the provider too (RP-initiated logout), if it says."""
        try:
            metadata = await self.discovery()
        except ProviderUnavailable:
            return None
        endpoint = metadata.get("end_session_endpoint")
        if not endpoint:
            return None
        return str(httpx.URL(endpoint, params={
            "client_id": self.settings.oidc_client_id,
            "post_logout_redirect_uri": self.settings.base_url.rstrip("/") + "/login"}))
