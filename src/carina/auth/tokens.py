"""Tokens of the workspace's users: HS256 JWTs signed with a secret the replicas share.

A token names its user and a short digest of their password hash (``pwv``); every use reads the
users file again (cached on its stat), so removing a user or changing a password ends their
tokens at once, and a change of roles applies to the next request.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import jwt

from carina.auth.roles import Principal, ordered
from carina.auth.users import UserEntry, UserStore
from carina.errors import AuthError, ConfigError

#: The environment variable that may hold the signing secret (otherwise a workspace file).
SECRET_ENV = "CARINA_TOKEN_SECRET"
SECRET_FILE = "token-secret"
SECRET_BYTES = 32
ISSUER = "carina"
ALGORITHM = "HS256"
#: The answer to a wrong user name and to a wrong password alike.
WRONG_CREDENTIALS = "wrong user name or password"
_REQUIRED_CLAIMS = ["sub", "roles", "iat", "exp", "iss", "aud", "jti", "pwv"]


def load_secret(folder: Path, *, configured: str | None = None) -> bytes:
    """The signing secret: ``configured`` (``CARINA_TOKEN_SECRET``) when given, else the 32
    bytes of ``folder/token-secret``, made once (mode 0600) by the first process that needs it.

    Raises:
        ConfigError: the configured secret is shorter than 32 characters, or the file does not
            hold 32 bytes.
    """
    if configured is not None:
        if len(configured) < SECRET_BYTES:
            raise ConfigError(
                SECRET_ENV, "", f"needs at least {SECRET_BYTES} characters (openssl rand -hex 32)"
            )
        return configured.encode()
    path = folder / SECRET_FILE
    return _read_secret(path) if path.exists() else _create_secret(path)


def _create_secret(path: Path) -> bytes:
    """Write a new secret to a private temporary file and link it to ``path``: the link fails
    when another process made the secret first, and then that one is read."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret = secrets.token_bytes(SECRET_BYTES)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(secret)
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)
    except FileExistsError:
        return _read_secret(path)
    finally:
        tmp.unlink(missing_ok=True)
    return secret


def _read_secret(path: Path) -> bytes:
    secret = path.read_bytes()
    if len(secret) != SECRET_BYTES:
        raise ConfigError(
            path.name,
            "",
            f"holds {len(secret)} bytes, not {SECRET_BYTES}; delete it to make a new one "
            "(every user then signs in again)",
        )
    return secret


def decode_token(token: str, key: Any, **checks: Any) -> dict[str, Any]:
    """The claims of ``token`` once ``jwt.decode(token, key, **checks)`` accepts it.

    Raises:
        AuthError: the token has expired, or is not valid (saying why).
    """
    try:
        return jwt.decode(token, key, **checks)
    except jwt.ExpiredSignatureError:
        raise AuthError("the token has expired; sign in again") from None
    except jwt.PyJWTError as exc:
        raise AuthError(f"the token is not valid ({exc})") from None


def password_version(entry: UserEntry) -> str:
    """A short digest of the user's current password hash (the token claim ``pwv``)."""
    return hashlib.sha256(entry.password_hash.encode()).hexdigest()[:16]


class LocalTokens:
    """Issues and checks the tokens of a workspace's users.

    Args:
        store: the users file.
        secret: the signing secret (:func:`load_secret`).
        audience: the ``aud`` claim (the client id).
        lifetime: seconds a token is valid.
    """

    def __init__(self, store: UserStore, secret: bytes, *, audience: str, lifetime: int) -> None:
        self._store = store
        self._secret = secret
        self._audience = audience
        self._lifetime = lifetime

    def issue(self, username: str, password: str) -> dict[str, Any]:
        """A token for the user, as an OAuth2 token answer (blocking: argon2 takes a while).

        Raises:
            AuthError: a wrong user name or password (the same message for both).
        """
        entry = self._store.verify(username, password)
        if entry is None:
            raise AuthError(WRONG_CREDENTIALS)
        now = int(time.time())
        claims = {
            "sub": entry.name,
            "roles": [str(role) for role in ordered(entry.roles)],
            "iat": now,
            "exp": now + self._lifetime,
            "iss": ISSUER,
            "aud": self._audience,
            "jti": uuid.uuid4().hex,
            "pwv": password_version(entry),
        }
        token = jwt.encode(claims, self._secret, algorithm=ALGORITHM)
        return {"access_token": token, "token_type": "Bearer", "expires_in": self._lifetime}

    def verify(self, token: str) -> Principal:
        """The user a token was issued to, with their current roles.

        Raises:
            AuthError: the token is malformed, expired, badly signed, for another audience, of a
                removed user, or older than the user's password.
        """
        claims = decode_token(
            token,
            self._secret,
            algorithms=[ALGORITHM],
            audience=self._audience,
            issuer=ISSUER,
            options={"require": _REQUIRED_CLAIMS},
        )
        entry = self._store.get(str(claims["sub"]))
        if entry is None or claims["pwv"] != password_version(entry):
            raise AuthError("the token was revoked (user removed or password changed)")
        return Principal(entry.name, entry.roles, "users")
