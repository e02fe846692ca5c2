"""OpenID Connect against a local test issuer: discovery, signatures, key rotation, issuer and
audience, algorithm confusion, roles, the forwarded password grant, an unreachable provider."""

from __future__ import annotations

import hashlib
import hmac
import socket
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carina.auth import Authenticator, Principal, Role
from carina.auth.oidc import OidcProvider
from carina.errors import AuthError
from carina.settings import Settings
from tests.auth.issuer import PASSWORD, USERNAME, Issuer, rsa_key
from tests.auth.test_tokens import b64, bearer

#: OIDC mode neither reads nor writes the workspace.
NO_WORKSPACE = Path("/nonexistent/carina-workspace")


def authenticator(issuer: Issuer, **settings: Any) -> Authenticator:
    return Authenticator.from_settings(
        Settings(oidc_discovery_url=issuer.discovery_url, **settings), NO_WORKSPACE
    )


def provider(issuer: Issuer, clock: list[float], **options: Any) -> OidcProvider:
    return OidcProvider(
        issuer.discovery_url,
        audience="carina",
        client_id="carina",
        clock=lambda: clock[0],
        **options,
    )


def test_discovery_and_a_valid_token(issuer: Issuer) -> None:
    auth = authenticator(issuer)
    assert auth.mode == "oidc" and auth.enabled
    assert auth.describe() == {"enabled": True, "client_id": "carina", "realm": issuer.url}
    principal = auth.verify(bearer(issuer.sign()))
    assert principal == Principal(USERNAME, frozenset({Role.ANNOTATOR}), "oidc")
    auth.verify(bearer(issuer.sign()))
    assert issuer.jwks_requests == 1, "the key set is cached"


def test_an_unknown_key_fetches_the_keys_again_at_most_once_a_minute(issuer: Issuer) -> None:
    clock = [1000.0]
    oidc = provider(issuer, clock)
    assert oidc.verify(issuer.sign()).name == USERNAME
    issuer.rotate("k2", rsa_key(2))
    clock[0] += 5
    with pytest.raises(AuthError, match="key the identity provider does not list"):
        oidc.verify(issuer.sign())
    assert issuer.jwks_requests == 1, "no second fetch within a minute"
    clock[0] += 60
    assert oidc.verify(issuer.sign()).name == USERNAME
    assert issuer.jwks_requests == 2
    with pytest.raises(AuthError, match="key the identity provider does not list"):
        oidc.verify(issuer.sign(kid="made-up", key=rsa_key(3)))
    assert issuer.jwks_requests == 2


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"iss": "http://evil.example"}, "Invalid issuer"),
        ({"aud": "another-client"}, "Audience doesn't match"),
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"aud": None}, "aud"),
    ],
)
def test_wrong_issuer_audience_or_time_is_refused(
    issuer: Issuer, claims: dict[str, Any], message: str
) -> None:
    token_claims = {k: v for k, v in issuer.claims(**claims).items() if v is not None}
    with pytest.raises(AuthError, match=message):
        authenticator(issuer).verify(bearer(issuer.sign(token_claims)))


def test_a_little_clock_skew_is_allowed(issuer: Issuer) -> None:
    skewed = issuer.claims(exp=int(time.time()) - 10, iat=int(time.time()) + 10)
    assert authenticator(issuer).verify(bearer(issuer.sign(skewed))).name == USERNAME


def test_the_audience_setting_wins_over_the_client_id(issuer: Issuer) -> None:
    token = issuer.sign(issuer.claims(aud=["account", "viewer"]))
    assert authenticator(issuer, oidc_audience="viewer").verify(bearer(token)).name == USERNAME
    with pytest.raises(AuthError, match="Audience doesn't match"):
        authenticator(issuer).verify(bearer(token))


def test_hs256_signed_with_the_public_key_is_refused(issuer: Issuer) -> None:
    public_pem = (
        issuer.keys[issuer.kid]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    signing_input = (
        f"{b64({'alg': 'HS256', 'typ': 'JWT', 'kid': issuer.kid})}.{b64(issuer.claims())}"
    )
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{jwt.utils.base64url_encode(signature).decode()}"
    with pytest.raises(AuthError, match="'HS256' are not accepted"):
        authenticator(issuer).verify(bearer(forged))


def test_none_and_a_key_of_the_wrong_type_are_refused(issuer: Issuer) -> None:
    unsigned = f"{b64({'alg': 'none', 'kid': issuer.kid})}.{b64(issuer.claims())}."
    with pytest.raises(AuthError, match="'none' are not accepted"):
        authenticator(issuer).verify(bearer(unsigned))
    ec_signed = issuer.sign(key=ec.generate_private_key(ec.SECP256R1()), algorithm="ES256")
    with pytest.raises(AuthError, match="ES256, which needs an EC key"):
        authenticator(issuer).verify(bearer(ec_signed))
    with pytest.raises(AuthError, match="not valid"):
        authenticator(issuer).verify(bearer("not-a-token"))


@pytest.mark.parametrize(
    ("roles", "expected"),
    [
        (["monailabel-admin"], {Role.ADMIN}),
        (["monailabel-reviewer", "monailabel-user"], {Role.REVIEWER, Role.USER}),
        (["annotator", "offline_access", "uma_authorization"], {Role.ANNOTATOR}),
        (["offline_access", "monailabel-owner"], set()),
        ([], set()),
    ],
)
def test_roles_map_from_both_naming_schemes(
    issuer: Issuer, roles: list[str], expected: set[Role]
) -> None:
    issuer.roles = roles
    principal = authenticator(issuer).verify(bearer(issuer.sign()))
    assert principal.roles == expected
    assert principal.has(Role.USER) == bool(expected)


def test_the_roles_claim_is_a_dotted_path(issuer: Issuer) -> None:
    claims = issuer.claims(resource_access={"carina": {"roles": ["monailabel-reviewer"]}})
    auth = authenticator(issuer, oidc_roles_claim="resource_access.carina.roles")
    assert auth.verify(bearer(issuer.sign(claims))).roles == {Role.REVIEWER}
    assert (
        authenticator(issuer, oidc_roles_claim="groups").verify(bearer(issuer.sign(claims))).roles
        == frozenset()
    )


def test_the_password_grant_is_forwarded(issuer: Issuer) -> None:
    auth = authenticator(issuer, oidc_client_secret="client-secret")
    answer = auth.token(USERNAME, PASSWORD)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 300
    assert auth.verify(bearer(answer["access_token"])).name == USERNAME
    assert issuer.forms == [
        {
            "grant_type": "password",
            "client_id": "carina",
            "client_secret": "client-secret",
            "username": USERNAME,
            "password": PASSWORD,
            "scope": "openid",
        }
    ]
    with pytest.raises(AuthError, match=r"^wrong user name or password$"):
        auth.token(USERNAME, "not-the-password")


def test_an_unreachable_provider_is_a_clear_auth_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/realms/x/.well-known/openid-configuration"
    auth = Authenticator.from_settings(Settings(oidc_discovery_url=url), NO_WORKSPACE)
    token = jwt.encode({"sub": USERNAME}, rsa_key(1), algorithm="RS256", headers={"kid": "k1"})
    for call in (lambda: auth.token(USERNAME, PASSWORD), lambda: auth.verify(bearer(token))):
        with pytest.raises(AuthError, match=f"identity provider 127.0.0.1:{port} cannot be"):
            call()
    assert auth.describe()["realm"] == f"http://127.0.0.1:{port}/realms/x"
