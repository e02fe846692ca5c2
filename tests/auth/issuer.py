"""A tiny OpenID Connect provider for tests: a real HTTP server on 127.0.0.1 (port 0) that
serves discovery, its RSA keys and a password grant for one test user, like Keycloak does."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

USERNAME = "ada"
PASSWORD = "correct horse battery"


@cache
def rsa_key(number: int) -> rsa.RSAPrivateKey:
    """The ``number``-th test key (made once per test run)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class Issuer:
    """The provider's state: its keys, what it hands out, and what it was asked.

    Attributes:
        url: the base URL, which is also the issuer.
        keys: the published keys by kid (the newest signs the password grant's tokens).
        roles: the realm roles its tokens carry.
        jwks_requests: how often its key set was fetched.
        forms: the password-grant forms it received.
    """

    url: str = ""
    audience: str = "carina"
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=lambda: {"k1": rsa_key(1)})
    roles: list[str] = field(default_factory=lambda: ["monailabel-annotator", "offline_access"])
    jwks_requests: int = 0
    forms: list[dict[str, str]] = field(default_factory=list)

    @property
    def discovery_url(self) -> str:
        return f"{self.url}/.well-known/openid-configuration"

    @property
    def kid(self) -> str:
        """The kid of the newest key."""
        return list(self.keys)[-1]

    def rotate(self, kid: str, key: rsa.RSAPrivateKey) -> None:
        """Publish ``key`` as ``kid`` and sign with it from now on, dropping the others."""
        self.keys = {kid: key}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """An access token's claims, as Keycloak writes them, with ``overrides``."""
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": self.audience,
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, USERNAME)),
            "preferred_username": USERNAME,
            "iat": now,
            "exp": now + 300,
            "realm_access": {"roles": self.roles},
        }
        claims.update(overrides)
        return claims

    def sign(
        self,
        claims: dict[str, Any] | None = None,
        *,
        kid: str | None = None,
        key: Any = None,
        algorithm: str = "RS256",
    ) -> str:
        """A token of ``claims`` (default :meth:`claims`) signed by a published key."""
        kid = kid or self.kid
        return jwt.encode(
            claims or self.claims(),
            key or self.keys[kid],
            algorithm=algorithm,
            headers={"kid": kid},
        )

    def jwks(self) -> dict[str, Any]:
        published = []
        for kid, key in self.keys.items():
            jwk = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
            assert isinstance(jwk, dict)
            published.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        # Keycloak publishes an encryption key too; it must be left out.
        enc = RSAAlgorithm.to_jwk(rsa_key(9).public_key(), as_dict=True)
        assert isinstance(enc, dict)
        published.append({**enc, "kid": "enc", "use": "enc", "alg": "RSA-OAEP"})
        return {"keys": published}

    def password_grant(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        self.forms.append(form)
        if form.get("username") != USERNAME or form.get("password") != PASSWORD:
            return 401, {"error": "invalid_grant", "error_description": "Invalid user credentials"}
        token = self.sign()
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": 300}


def _handler(issuer: Issuer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/.well-known/openid-configuration":
                self._answer(
                    200,
                    {
                        "issuer": issuer.url,
                        "jwks_uri": f"{issuer.url}/jwks",
                        "token_endpoint": f"{issuer.url}/token",
                    },
                )
            elif self.path == "/jwks":
                issuer.jwks_requests += 1
                self._answer(200, issuer.jwks())
            else:
                self._answer(404, {"error": "not found"})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length).decode()
            form = {key: values[0] for key, values in parse_qs(body).items()}
            if self.path != "/token" or form.get("grant_type") != "password":
                self._answer(400, {"error": "unsupported_grant_type"})
                return
            self._answer(*issuer.password_grant(form))

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet."""

    return Handler


@contextmanager
def running_issuer() -> Iterator[Issuer]:
    """An :class:`Issuer` served on 127.0.0.1 for the block."""
    issuer = Issuer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(issuer))
    issuer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
