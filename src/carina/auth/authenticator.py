"""Sign-in for the annotation server: which mode applies, the token grant, and the check of a
request's ``Authorization`` header, in one object the server builds once."""

from __future__ import annotations

import ipaddress
import logging
import os
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher

from carina.auth.oidc import OidcProvider
from carina.auth.roles import OPEN, Principal
from carina.auth.tokens import SECRET_ENV, LocalTokens, load_secret
from carina.auth.users import UserStore
from carina.errors import AuthError, ConfigError
from carina.settings import Settings

logger = logging.getLogger(__name__)

Mode = Literal["off", "users", "oidc"]


class Authenticator:
    """Issues and checks bearer tokens in one of three modes: ``off`` (every request is
    :data:`~carina.auth.OPEN`), ``users`` (the workspace's users file, tokens Carina signs) or
    ``oidc`` (an identity provider's tokens).

    Build it with :meth:`from_settings`.

    Args:
        mode: the resolved mode.
        client_id: the client id ``GET /auth/`` announces.
        local: the token issuer of ``users`` mode.
        oidc: the provider of ``oidc`` mode.
    """

    def __init__(
        self,
        mode: Mode,
        *,
        client_id: str,
        local: LocalTokens | None = None,
        oidc: OidcProvider | None = None,
    ) -> None:
        if (mode == "users") != (local is not None) or (mode == "oidc") != (oidc is not None):
            raise ValueError(f"mode {mode!r} needs its token issuer, and only that")
        self.mode: Mode = mode
        self.client_id = client_id
        self._local = local
        self._oidc = oidc

    @classmethod
    def from_settings(
        cls, settings: Settings, workspace: Path, *, hasher: PasswordHasher | None = None
    ) -> Authenticator:
        """The authenticator the settings ask for (see :func:`resolve_mode`).

        Args:
            settings: the server's settings.
            workspace: the workspace (``auth/`` inside holds the users file and the secret).
            hasher: the argon2 hasher of the users file (default parameters unless given).

        Raises:
            ConfigError: ``oidc`` without a discovery URL, or a bad signing secret.
        """
        store = UserStore(workspace, hasher=hasher)
        mode = resolve_mode(settings, store)
        if mode == "users":
            secret = load_secret(store.folder, configured=os.environ.get(SECRET_ENV))
            local = LocalTokens(
                store, secret, audience=settings.auth_client_id, lifetime=settings.token_lifetime
            )
            return cls(mode, client_id=settings.auth_client_id, local=local)
        if mode == "oidc":
            assert settings.oidc_discovery_url is not None  # resolve_mode checked it
            secret_str = settings.oidc_client_secret
            oidc = OidcProvider(
                settings.oidc_discovery_url,
                audience=settings.oidc_audience or settings.auth_client_id,
                client_id=settings.auth_client_id,
                client_secret=secret_str.get_secret_value() if secret_str else None,
                roles_claim=settings.oidc_roles_claim,
            )
            return cls(mode, client_id=settings.auth_client_id, oidc=oidc)
        return cls(mode, client_id=settings.auth_client_id)

    @property
    def enabled(self) -> bool:
        """Whether requests must carry a token."""
        return self.mode != "off"

    def describe(self) -> dict[str, Any]:
        """The body of ``GET /auth/`` (MONAI Label's): whether sign-in is on, the client id,
        and the realm (the OIDC issuer; None otherwise)."""
        realm = self._oidc.realm() if self._oidc else None
        return {"enabled": self.enabled, "client_id": self.client_id, "realm": realm}

    def token(self, username: str, password: str) -> dict[str, Any]:
        """The password grant: ``{"access_token", "token_type": "Bearer", "expires_in"}``.

        Blocking (an argon2 hash, or a request to the provider): call it in a thread.

        Raises:
            AuthError: a wrong user name or password (one message for both), sign-in off, or
                an identity provider that cannot be reached or refuses.
        """
        if self._local is not None:
            answer = self._local.issue(username, password)
        elif self._oidc is not None:
            answer = self._oidc.password_grant(username, password)
        else:
            raise AuthError("sign-in is off on this server")
        logger.info("signed in %r", username)
        return answer

    def verify(self, authorization: str | None) -> Principal:
        """Who sends a request, from its ``Authorization: Bearer <token>`` header value.

        In ``oidc`` mode this may fetch the provider's keys (at most 10 s, rarely).

        Raises:
            AuthError: the header is missing or malformed, or the token is not valid (expired,
                badly signed, of a removed user or from before a password change).
        """
        if self._local is not None:
            return self._local.verify(bearer_token(authorization))
        if self._oidc is not None:
            return self._oidc.verify(bearer_token(authorization))
        return OPEN


def resolve_mode(settings: Settings, store: UserStore) -> Mode:
    """The sign-in mode: ``settings.auth``, or for ``auto`` ``oidc`` when a discovery URL is
    set, else ``users`` once the users file has a user, else ``off``.

    Raises:
        ConfigError: ``oidc`` without a discovery URL.
    """
    if settings.auth == "oidc" and not settings.oidc_discovery_url:
        raise ConfigError("CARINA_AUTH", "", "'oidc' needs CARINA_OIDC_DISCOVERY_URL")
    if settings.auth != "auto":
        return settings.auth
    if settings.oidc_discovery_url:
        return "oidc"
    return "users" if store.users() else "off"


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization`` header value ``Bearer <token>`` (any case of Bearer).

    Raises:
        AuthError: the value is missing or is not a bearer token.
    """
    parts = (authorization or "").split()
    if not parts:
        raise AuthError("sign-in required: send 'Authorization: Bearer <token>'")
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise AuthError("malformed Authorization header: expected 'Bearer <token>'")
    return parts[1]


def check_exposure(settings: Settings, mode: str) -> None:
    """Refuse to serve on an address other machines reach while sign-in is off.

    Raises:
        ConfigError: ``settings.host`` is not a loopback address, ``mode`` is ``off`` and
            ``settings.insecure_no_auth`` is not set.
    """
    if mode != "off" or settings.insecure_no_auth or is_loopback(settings.host):
        return
    raise ConfigError(
        "CARINA_HOST",
        "",
        f"{settings.host} can be reached from other machines and sign-in is off: add a user "
        "(`carina users add NAME --role admin --workspace W`), configure OIDC "
        "(CARINA_OIDC_DISCOVERY_URL), or pass --insecure-no-auth on a trusted network",
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or an address of 127.0.0.0/8 or ``::1``."""
    host = host.strip().removeprefix("[").removesuffix("]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
