"""Roles and the signed-in principal: MONAI Label's four roles, each allowing what the ones
below it allow (admin > reviewer > annotator > user)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from carina.errors import CarinaError

#: The prefix MONAI Label's Keycloak realm gives its role names (``monailabel-admin``).
MONAI_LABEL_PREFIX = "monailabel-"


class Role(StrEnum):
    """What a signed-in user may do; a role includes every role below it."""

    USER = "user"
    ANNOTATOR = "annotator"
    REVIEWER = "reviewer"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        """The role's place in the hierarchy: 0 for user, up to 3 for admin."""
        return list(Role).index(self)


class UserStoreError(CarinaError):
    """A users-file request is wrong: an unknown or existing user, a bad name, a short password,
    an unknown role. Nothing was changed."""


def parse_role(name: str) -> Role:
    """The role named ``name`` (``admin``, ``reviewer``, ``annotator``, ``user``).

    Raises:
        UserStoreError: no role has that name.
    """
    try:
        return Role(name)
    except ValueError:
        known = ", ".join(Role)
        raise UserStoreError(f"unknown role {name!r}; the roles are {known}") from None


def ordered(roles: Iterable[Role]) -> list[Role]:
    """``roles`` from the lowest to the highest."""
    return sorted(roles, key=lambda role: role.rank)


def roles_from_names(names: Iterable[str]) -> frozenset[Role]:
    """The known roles among ``names``, an identity provider's role list: ``admin`` as well as
    MONAI Label's ``monailabel-admin``; other names are left out."""
    by_name = {role.value: role for role in Role}
    plain = (name.removeprefix(MONAI_LABEL_PREFIX) for name in names)
    return frozenset(by_name[name] for name in plain if name in by_name)


@dataclass(frozen=True)
class Principal:
    """Who a request comes from.

    Attributes:
        name: the user name (``anonymous`` when sign-in is off).
        roles: the roles granted; empty when a provider's token names no known role.
        via: how the principal was established: ``users`` (the workspace's users file),
            ``oidc`` (an identity provider's token), ``open`` (sign-in off) or ``admin-token``.
    """

    name: str
    roles: frozenset[Role]
    via: str

    def has(self, role: Role) -> bool:
        """Whether any of the principal's roles is ``role`` or above it."""
        return any(own.rank >= role.rank for own in self.roles)


#: The principal every request has when sign-in is off.
OPEN = Principal("anonymous", frozenset({Role.ADMIN}), "open")
