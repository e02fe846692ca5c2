"""Sign-in without Keycloak: the workspace's users (argon2 password hashes, signed tokens) or an
existing identity provider (OpenID Connect), with MONAI Label's roles.

``Authenticator.from_settings(settings, workspace)`` picks the mode; the server asks it for a
request's :class:`Principal` and checks :meth:`Principal.has` against the role a route needs.
"""

from carina.auth.authenticator import Authenticator, check_exposure
from carina.auth.roles import OPEN, Principal, Role, UserStoreError
from carina.auth.users import UserEntry, UserStore

__all__ = [
    "OPEN",
    "Authenticator",
    "Principal",
    "Role",
    "UserEntry",
    "UserStore",
    "UserStoreError",
    "check_exposure",
]
