"""Fixtures of the sign-in tests: a cheap password hasher, a users file, a test issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from carina.auth import UserStore
from tests.auth.issuer import Issuer, running_issuer


def cheap_hasher() -> PasswordHasher:
    """argon2id with the smallest parameters, so that tests hash in microseconds."""
    return PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture
def hasher() -> PasswordHasher:
    return cheap_hasher()


@pytest.fixture
def store(tmp_path: Path, hasher: PasswordHasher) -> UserStore:
    """An empty users file in a fresh workspace."""
    return UserStore(tmp_path, hasher=hasher)


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture(autouse=True)
def _no_secret_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The signing secret comes from the workspace unless a test sets it."""
    monkeypatch.delenv("CARINA_TOKEN_SECRET", raising=False)
