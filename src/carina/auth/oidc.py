"""Tokens of an existing identity provider (Keycloak, Entra ID, Authentik...) through OpenID
Connect: discovery, signature checks against the provider's published keys, roles from a claim.

The provider's keys are fetched once and again only when a token names a key not seen yet (a key
rotation), at most once a minute, so a stream of made-up key ids cannot hammer the provider.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
import jwt
from pydantic import BaseModel, ValidationError

from carina.auth.roles import Principal, roles_from_names
from carina.auth.tokens import WRONG_CREDENTIALS, decode_token
from carina.errors import AuthError

#: The signing algorithms accepted, with the key type each needs (never "none" nor HS*).
ALGORITHMS = {"RS256": "RSA", "PS256": "RSA", "ES256": "EC"}
#: Seconds of clock difference allowed on ``exp`` and ``iat``.
LEEWAY = 30
#: Seconds between two fetches of the provider's keys.
REFETCH_INTERVAL = 60.0
#: Seconds one request to the provider may take.
TIMEOUT = 10.0
_DISCOVERY_SUFFIX = "/.well-known/openid-configuration"


class Discovery(BaseModel):
    """The parts of the provider's discovery document Carina uses."""

    issuer: str
    jwks_uri: str
    token_endpoint: str | None = None


class OidcProvider:
    """An OpenID Connect provider whose access tokens the server accepts.

    Args:
        discovery_url: the provider's ``.../.well-known/openid-configuration``.
        audience: the ``aud`` its tokens must name.
        client_id: the client the password grant is made for.
        client_secret: that client's secret, when it has one.
        roles_claim: dotted path of the roles list in a token (``realm_access.roles``).
        clock: seconds of a monotonic clock (tests pass their own).
    """

    def __init__(
        self,
        discovery_url: str,
        *,
        audience: str,
        client_id: str,
        client_secret: str | None = None,
        roles_claim: str = "realm_access.roles",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.discovery_url = discovery_url
        self._audience = audience
        self._client_id = client_id
        self._client_secret = client_secret
        self._roles_claim = roles_claim
        self._clock = clock
        self._discovery: Discovery | None = None
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def discovery(self) -> Discovery:
        """The discovery document, read once.

        Raises:
            AuthError: the provider cannot be reached or answers no usable document.
        """
        if self._discovery is None:
            body = self._get_json(self.discovery_url, "discovery")
            try:
                self._discovery = Discovery.model_validate(body)
            except ValidationError as exc:
                missing = ", ".join(str(e["loc"][0]) for e in exc.errors() if e["loc"])
                raise AuthError(
                    f"the discovery document of the identity provider "
                    f"{_host(self.discovery_url)} lacks {missing or 'a field'}"
                ) from None
        return self._discovery

    def realm(self) -> str:
        """The issuer (for Keycloak the realm's URL), or, while the provider cannot be reached,
        the discovery URL without its well-known suffix."""
        try:
            return self.discovery().issuer
        except AuthError:
            return self.discovery_url.removesuffix(_DISCOVERY_SUFFIX)

    def password_grant(self, username: str, password: str) -> dict[str, Any]:
        """Forward a password grant to the provider's token endpoint; its token answer.

        Raises:
            AuthError: a wrong user name or password, a refusal, or an unreachable provider.
        """
        endpoint = self.discovery().token_endpoint
        if not endpoint:
            raise AuthError(f"the identity provider {_host(self.discovery_url)} has no token URL")
        form = {
            "grant_type": "password",
            "client_id": self._client_id,
            "username": username,
            "password": password,
            "scope": "openid",
        }
        if self._client_secret:
            form["client_secret"] = self._client_secret
        response = _request("POST", endpoint, data=form)
        if response.status_code in (400, 401):
            raise AuthError(_refusal(response, endpoint))
        body = _json(response, endpoint, "the password grant")
        token = body.get("access_token")
        if not isinstance(token, str):
            raise AuthError(f"the identity provider {_host(endpoint)} answered no access token")
        return {
            "access_token": token,
            "token_type": body.get("token_type", "Bearer"),
            "expires_in": body.get("expires_in"),
        }

    def verify(self, token: str) -> Principal:
        """The user a provider's access token names, with the roles of its roles claim (none
        when it names no known role).

        Raises:
            AuthError: the token is malformed, expired, signed with a refused algorithm or an
                unknown key, badly signed, or from another issuer or for another audience.
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("the token is not valid") from None
        algorithm = header.get("alg")
        if algorithm not in ALGORITHMS:
            raise AuthError(f"tokens signed with {algorithm!r} are not accepted")
        key = self._key(header.get("kid"), algorithm)
        claims = decode_token(
            token,
            key.key,
            algorithms=[algorithm],
            audience=self._audience,
            issuer=self.discovery().issuer,
            leeway=LEEWAY,
            options={"require": ["exp", "iat", "iss", "aud"]},
        )
        name = claims.get("preferred_username") or claims.get("sub")
        if not isinstance(name, str) or not name:
            raise AuthError("the token names no user (no preferred_username nor sub)")
        return Principal(name, roles_from_names(_role_claim(claims, self._roles_claim)), "oidc")

    def _key(self, kid: object, algorithm: str) -> jwt.PyJWK:
        """The provider's key ``kid``, fetching the keys again when it is unknown (key
        rotation), at most once per :data:`REFETCH_INTERVAL`."""
        kid = kid if isinstance(kid, str) else None
        with self._lock:
            if self._fetched_at is None:
                self._fetch_keys()
            key = self._find(kid)
            if key is None and self._clock() - (self._fetched_at or 0.0) >= REFETCH_INTERVAL:
                self._fetch_keys()
                key = self._find(kid)
        if key is None:
            raise AuthError("the token is signed with a key the identity provider does not list")
        if key.key_type != ALGORITHMS[algorithm]:
            family = ALGORITHMS[algorithm]
            raise AuthError(f"the token is signed with {algorithm}, which needs an {family} key")
        return key

    def _find(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    def _fetch_keys(self) -> None:
        uri = self.discovery().jwks_uri
        body = self._get_json(uri, "the key set")
        try:
            keys = jwt.PyJWKSet.from_dict(body).keys
        except jwt.PyJWTError:
            raise AuthError(f"the identity provider {_host(uri)} lists no usable key") from None
        self._keys = {key.key_id: key for key in keys if key.public_key_use in (None, "sig")}
        self._fetched_at = self._clock()

    def _get_json(self, url: str, what: str) -> dict[str, Any]:
        return _json(_request("GET", url), url, what)


def _request(method: str, url: str, **kwargs: Any) -> httpx.Response:
    try:
        return httpx.request(method, url, timeout=TIMEOUT, **kwargs)
    except httpx.HTTPError as exc:
        reason = str(exc) or type(exc).__name__
        raise AuthError(
            f"the identity provider {_host(url)} cannot be reached ({reason})"
        ) from None


def _json(response: httpx.Response, url: str, what: str) -> dict[str, Any]:
    if response.status_code != 200:
        raise AuthError(
            f"the identity provider {_host(url)} answered HTTP {response.status_code} to {what}"
        )
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise AuthError(f"the identity provider {_host(url)} answered no JSON object to {what}")
    return body


def _refusal(response: httpx.Response, url: str) -> str:
    """What a provider's 400 or 401 to a password grant means: a wrong user name or password
    (``invalid_grant``), or another refusal named by its OAuth2 error code."""
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if error in (None, "invalid_grant"):
        return WRONG_CREDENTIALS
    return f"the identity provider {_host(url)} refused the sign-in ({error})"


def _role_claim(claims: Mapping[str, Any], path: str) -> list[str]:
    """The strings at the dotted ``path`` of ``claims`` (a list, or one string); [] if none."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _host(url: str) -> str:
    return urlsplit(url).netloc or url
