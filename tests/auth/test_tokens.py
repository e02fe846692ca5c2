"""Tokens of the workspace's users: issue, verify, expiry, signatures, audience, revocation,
the modes, the Authorization header, and the loopback rule."""

from __future__ import annotations

import base64
import json
import stat
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from argon2 import PasswordHasher

from carina.auth import OPEN, Authenticator, Principal, Role, UserStore, check_exposure
from carina.auth.tokens import _create_secret
from carina.errors import AuthError, ConfigError
from carina.settings import Settings

PASSWORD = "s3cret-enough"


@pytest.fixture
def signed_in(store: UserStore, hasher: PasswordHasher) -> Authenticator:
    """Users mode, with ``ada`` (annotator) in the users file."""
    store.add("ada", PASSWORD, [Role.ANNOTATOR])
    return Authenticator.from_settings(
        Settings(auth="auto", token_lifetime=600), store.folder.parent, hasher=hasher
    )


def bearer(token: str) -> str:
    return f"Bearer {token}"


def token_of(authenticator: Authenticator, name: str = "ada", password: str = PASSWORD) -> str:
    answer = authenticator.token(name, password)
    return str(answer["access_token"])


def resigned(token: str, workspace: Path, **changes: Any) -> str:
    """``token`` with ``changes`` to its claims, signed again with the workspace's secret."""
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(changes)
    secret = (workspace / "auth" / "token-secret").read_bytes()
    return jwt.encode(claims, secret, algorithm="HS256")


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_a_token_names_its_user_and_roles(signed_in: Authenticator) -> None:
    answer = signed_in.token("ada", PASSWORD)
    assert answer["token_type"] == "Bearer" and answer["expires_in"] == 600
    claims = jwt.decode(answer["access_token"], options={"verify_signature": False})
    assert (
        claims["iss"] == "carina" and claims["aud"] == "carina" and claims["roles"] == ["annotator"]
    )
    assert claims["exp"] - claims["iat"] == 600 and claims["jti"] and claims["pwv"]
    principal = signed_in.verify(bearer(answer["access_token"]))
    assert principal == Principal("ada", frozenset({Role.ANNOTATOR}), "users")


def test_the_scheme_is_case_insensitive(signed_in: Authenticator) -> None:
    assert signed_in.verify(f"bEaReR  {token_of(signed_in)} ").name == "ada"


def test_wrong_password_and_unknown_user_are_one_error(signed_in: Authenticator) -> None:
    with pytest.raises(AuthError) as wrong:
        signed_in.token("ada", "not-the-password")
    with pytest.raises(AuthError) as unknown:
        signed_in.token("bob", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "wrong user name or password"


@pytest.mark.parametrize("header", [None, "", "Bearer", "Basic YWRhOnB3", "Bearer a b", "a.b.c"])
def test_a_missing_or_malformed_header_is_refused(
    signed_in: Authenticator, header: str | None
) -> None:
    with pytest.raises(AuthError, match=r"sign-in required|malformed"):
        signed_in.verify(header)


def test_an_expired_token_is_refused(signed_in: Authenticator, tmp_path: Path) -> None:
    past = int(time.time()) - 10
    token = resigned(token_of(signed_in), tmp_path, iat=past - 600, exp=past)
    with pytest.raises(AuthError, match="expired"):
        signed_in.verify(bearer(token))


def test_a_tampered_token_is_refused(signed_in: Authenticator, tmp_path: Path) -> None:
    token = token_of(signed_in)
    head, payload, signature = token.split(".")
    flipped = signature[:5] + ("A" if signature[5] != "A" else "B") + signature[6:]
    with pytest.raises(AuthError, match="not valid"):
        signed_in.verify(bearer(f"{head}.{payload}.{flipped}"))
    claims = jwt.decode(token, options={"verify_signature": False})
    promoted = b64({**claims, "roles": ["admin"], "sub": "root"})
    with pytest.raises(AuthError, match="not valid"):
        signed_in.verify(bearer(f"{head}.{promoted}.{signature}"))


def test_a_token_for_another_audience_is_refused(
    signed_in: Authenticator, tmp_path: Path, hasher: PasswordHasher
) -> None:
    other = Authenticator.from_settings(
        Settings(auth="users", auth_client_id="other"), tmp_path, hasher=hasher
    )
    with pytest.raises(AuthError, match="not valid"):
        signed_in.verify(bearer(token_of(other)))


def test_an_unsigned_token_is_refused(signed_in: Authenticator) -> None:
    claims = jwt.decode(token_of(signed_in), options={"verify_signature": False})
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64({**claims, 'roles': ['admin']})}."
    with pytest.raises(AuthError, match="not valid"):
        signed_in.verify(bearer(unsigned))


def test_removing_the_user_or_changing_the_password_revokes(
    signed_in: Authenticator, store: UserStore
) -> None:
    first = token_of(signed_in)
    store.set_password("ada", "a-new-password")
    with pytest.raises(AuthError, match="revoked"):
        signed_in.verify(bearer(first))
    second = token_of(signed_in, password="a-new-password")
    assert signed_in.verify(bearer(second)).name == "ada"
    store.remove("ada")
    with pytest.raises(AuthError, match="revoked"):
        signed_in.verify(bearer(second))


def test_a_change_of_roles_applies_to_the_next_request(
    signed_in: Authenticator, store: UserStore
) -> None:
    token = token_of(signed_in)
    store.set_roles("ada", [Role.REVIEWER])
    assert signed_in.verify(bearer(token)).roles == {Role.REVIEWER}


def test_the_signing_secret_is_made_once_and_private(
    signed_in: Authenticator, tmp_path: Path, hasher: PasswordHasher
) -> None:
    secret = tmp_path / "auth" / "token-secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(secret.read_bytes()) == 32
    replica = Authenticator.from_settings(Settings(auth="users"), tmp_path, hasher=hasher)
    assert replica.verify(bearer(token_of(signed_in))).name == "ada"
    assert _create_secret(secret) == secret.read_bytes(), "a process that lost the race reads it"
    assert [p.name for p in secret.parent.iterdir() if p.name.startswith(".")] == []


def test_the_secret_may_come_from_the_environment(
    signed_in: Authenticator,
    tmp_path: Path,
    hasher: PasswordHasher,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CARINA_TOKEN_SECRET", "x" * 40)
    from_env = Authenticator.from_settings(Settings(auth="users"), tmp_path, hasher=hasher)
    token = token_of(from_env)
    with pytest.raises(AuthError, match="not valid"):
        signed_in.verify(bearer(token))
    assert from_env.verify(bearer(token)).name == "ada"
    monkeypatch.setenv("CARINA_TOKEN_SECRET", "short")
    with pytest.raises(ConfigError, match="CARINA_TOKEN_SECRET: needs at least 32"):
        Authenticator.from_settings(Settings(auth="users"), tmp_path, hasher=hasher)


def test_roles_are_hierarchical() -> None:
    reviewer = Principal("rita", frozenset({Role.REVIEWER}), "users")
    assert reviewer.has(Role.USER) and reviewer.has(Role.ANNOTATOR) and reviewer.has(Role.REVIEWER)
    assert not reviewer.has(Role.ADMIN)
    assert all(OPEN.has(role) for role in Role)
    nobody = Principal("nobody", frozenset(), "oidc")
    assert not any(nobody.has(role) for role in Role)


def test_the_mode_follows_the_settings(tmp_path: Path, hasher: PasswordHasher) -> None:
    def mode(**settings: Any) -> str:
        return Authenticator.from_settings(Settings(**settings), tmp_path, hasher=hasher).mode

    assert mode() == "off"
    assert mode(oidc_discovery_url="http://127.0.0.1:9/.well-known/openid-configuration") == "oidc"
    assert mode(auth="users") == "users"
    UserStore(tmp_path, hasher=hasher).add("ada", PASSWORD, [Role.USER])
    assert mode() == "users"
    assert mode(auth="off") == "off"
    with pytest.raises(ConfigError, match="CARINA_AUTH: 'oidc' needs CARINA_OIDC_DISCOVERY_URL"):
        mode(auth="oidc")


def test_sign_in_off_lets_everyone_in(tmp_path: Path) -> None:
    off = Authenticator.from_settings(Settings(auth="off"), tmp_path)
    assert not off.enabled and off.verify(None) is OPEN
    assert off.describe() == {"enabled": False, "client_id": "carina", "realm": None}
    with pytest.raises(AuthError, match="sign-in is off"):
        off.token("ada", PASSWORD)
    assert not (tmp_path / "auth").exists(), "nothing is written while sign-in is off"


def test_describe_in_users_mode(signed_in: Authenticator) -> None:
    assert signed_in.enabled
    assert signed_in.describe() == {"enabled": True, "client_id": "carina", "realm": None}


@pytest.mark.parametrize(
    ("host", "mode", "insecure", "refused"),
    [
        ("0.0.0.0", "off", False, True),
        ("10.1.2.3", "off", False, True),
        ("::", "off", False, True),
        ("server.example.org", "off", False, True),
        ("0.0.0.0", "users", False, False),
        ("0.0.0.0", "oidc", False, False),
        ("0.0.0.0", "off", True, False),
        ("127.0.0.1", "off", False, False),
        ("127.8.9.10", "off", False, False),
        ("::1", "off", False, False),
        ("[::1]", "off", False, False),
        ("localhost", "off", False, False),
    ],
)
def test_sign_in_off_is_only_for_loopback(
    host: str, mode: str, insecure: bool, refused: bool
) -> None:
    settings = Settings(host=host, insecure_no_auth=insecure)
    if not refused:
        check_exposure(settings, mode)
        return
    with pytest.raises(ConfigError) as error:
        check_exposure(settings, mode)
    message = str(error.value)
    assert host in message and "--insecure-no-auth" in message
    assert "carina users add NAME --role admin --workspace W" in message and "OIDC" in message
