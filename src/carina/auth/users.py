"""The workspace's users file, ``WORKSPACE/auth/users.json``: names, argon2 password hashes and
roles, shared by every server replica on the workspace.

Each change happens under an exclusive lock and is written atomically (mode 0600, in a folder of
mode 0700), so two ``carina users add`` at once both land and a reader never sees half a file.
Hashes and passwords are never logged or printed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import re
import secrets
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import AwareDatetime, BaseModel, ValidationError

from carina.auth.roles import Role, UserStoreError, ordered, parse_role
from carina.errors import ConfigError
from carina.files import atomic_path, exclusive_lock

logger = logging.getLogger(__name__)

USERS_FILE = "users.json"
#: A user name: letters, digits and ``._@-``, 1 to 64 characters.
USER_NAME = re.compile(r"[A-Za-z0-9._@-]{1,64}")
MIN_PASSWORD_LENGTH = 8
#: Seconds a change waits for another process's change to finish.
_LOCK_WAIT = 10.0
#: Seconds after which the lock of a holder on another host that stopped touching it is taken.
_LOCK_MAX_AGE = 30.0


@dataclass(frozen=True)
class UserEntry:
    """One user of the users file.

    Attributes:
        name: the user name.
        password_hash: the argon2 hash of the password (never shown).
        roles: the roles granted.
        created: when the user was added.
        changed: when the password or roles last changed.
    """

    name: str
    password_hash: str = field(repr=False)
    roles: frozenset[Role]
    created: datetime
    changed: datetime


class _UserRecord(BaseModel):
    hash: str
    roles: list[Role]
    created: AwareDatetime
    changed: AwareDatetime


class _UsersFile(BaseModel):
    users: dict[str, _UserRecord] = {}


Users = dict[str, UserEntry]


class UserStore:
    """The users file of a workspace.

    Args:
        workspace: the workspace folder (the file is ``auth/users.json`` inside).
        hasher: the argon2 hasher; the default has argon2-cffi's memory-hard parameters (tests
            pass cheaper ones).
    """

    def __init__(self, workspace: Path, *, hasher: PasswordHasher | None = None) -> None:
        self.folder = Path(workspace) / "auth"
        self.path = self.folder / USERS_FILE
        self._hasher = hasher or PasswordHasher()
        self._cache: tuple[tuple[int, ...], Users] | None = None
        self._dummy_hash: str | None = None

    def add(self, name: str, password: str, roles: Iterable[Role | str]) -> UserEntry:
        """Add a user with ``roles`` (roles or their names).

        Raises:
            UserStoreError: the user exists, or the name, password or roles are not acceptable.
        """
        check_user_name(name)
        granted = _checked_roles(roles)
        hashed = self._hash(password)
        now = datetime.now(UTC)
        entry = UserEntry(name, hashed, granted, now, now)

        def add_entry(users: Users) -> UserEntry:
            if name in users:
                raise UserStoreError(f"user {name!r} exists; `carina users passwd` changes it")
            users[name] = entry
            return entry

        return self._update(add_entry)

    def remove(self, name: str) -> UserEntry:
        """Remove a user; their tokens stop working at once.

        Raises:
            UserStoreError: no such user.
        """
        return self._update(lambda users: users.pop(_existing(users, name).name))

    def set_password(self, name: str, password: str) -> UserEntry:
        """Change a user's password; their tokens stop working at once.

        Raises:
            UserStoreError: no such user, or the password is too short.
        """
        hashed = self._hash(password)
        return self._change(name, password_hash=hashed)

    def set_roles(self, name: str, roles: Iterable[Role | str]) -> UserEntry:
        """Replace a user's roles (the next request of their tokens has the new ones).

        Raises:
            UserStoreError: no such user, or no or an unknown role.
        """
        return self._change(name, roles=_checked_roles(roles))

    def users(self) -> list[UserEntry]:
        """Every user, sorted by name."""
        return sorted(self._load().values(), key=lambda entry: entry.name)

    def get(self, name: str) -> UserEntry | None:
        """The user called ``name``, or None."""
        return self._load().get(name)

    def verify(self, name: str, password: str) -> UserEntry | None:
        """The user when ``password`` is theirs; None for a wrong password or an unknown user.

        Both failures take the same time (an unknown user's password is checked against a
        dummy hash). A hash made with older parameters is replaced by one with the current ones.
        """
        entry = self.get(name)
        if entry is None:
            self._matches(self._dummy(), password)
            return None
        if not self._matches(entry.password_hash, password):
            return None
        if self._hasher.check_needs_rehash(entry.password_hash):
            return self._rehash(entry, password)
        return entry

    def _hash(self, password: str) -> str:
        check_password(password)
        return self._hasher.hash(password)

    def _matches(self, hashed: str, password: str) -> bool:
        try:
            return self._hasher.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _rehash(self, entry: UserEntry, password: str) -> UserEntry:
        hashed = self._hasher.hash(password)

        def store_new_hash(users: Users) -> UserEntry:
            current = users.get(entry.name)
            if current is None or current.password_hash != entry.password_hash:
                return entry  # changed meanwhile: leave the newer change alone
            users[entry.name] = replace(current, password_hash=hashed)
            return users[entry.name]

        try:
            return self._update(store_new_hash)
        except (UserStoreError, OSError) as exc:
            logger.warning("could not store the new password hash of %r: %s", entry.name, exc)
            return entry

    def _change(
        self,
        name: str,
        *,
        password_hash: str | None = None,
        roles: frozenset[Role] | None = None,
    ) -> UserEntry:
        def change_entry(users: Users) -> UserEntry:
            entry = _existing(users, name)
            users[name] = replace(
                entry,
                password_hash=password_hash or entry.password_hash,
                roles=roles or entry.roles,
                changed=datetime.now(UTC),
            )
            return users[name]

        return self._update(change_entry)

    def _update(self, change: Callable[[Users], UserEntry]) -> UserEntry:
        """Apply ``change`` to the file's current users under the lock, then write them."""
        with self._locked():
            users = self._read() if self.path.exists() else {}
            result = change(users)
            self._write(users)
        return result

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._make_folder()
        lock = self.folder / f"{USERS_FILE}.lock"
        deadline = time.monotonic() + _LOCK_WAIT
        with contextlib.ExitStack() as stack:
            while True:
                try:
                    stack.enter_context(exclusive_lock(lock, max_age=_LOCK_MAX_AGE))
                    break
                except FileExistsError as exc:
                    if time.monotonic() > deadline:
                        raise UserStoreError(
                            f"{USERS_FILE} is being changed by another process ({exc}); try again"
                        ) from None
                    time.sleep(0.01 + 0.04 * random.random())
            yield

    def _make_folder(self) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.folder.stat().st_mode & 0o777 != 0o700:
            self.folder.chmod(0o700)

    def _load(self) -> Mapping[str, UserEntry]:
        """The users, parsed again only when the file's stat says it changed."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        key = (stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino)
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        with self.path.open("rb") as stream:
            stat = os.fstat(stream.fileno())
            users = _parse(stream.read())
        self._cache = ((stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size, stat.st_ino), users)
        return users

    def _read(self) -> Users:
        return _parse(self.path.read_bytes())

    def _write(self, users: Users) -> None:
        document = _UsersFile(
            users={
                entry.name: _UserRecord(
                    hash=entry.password_hash,
                    roles=ordered(entry.roles),
                    created=entry.created,
                    changed=entry.changed,
                )
                for entry in sorted(users.values(), key=lambda entry: entry.name)
            }
        )
        with atomic_path(self.path) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(document.model_dump_json(indent=2).encode() + b"\n")


def check_user_name(name: str) -> None:
    """Raise :class:`UserStoreError` unless ``name`` is 1 to 64 letters, digits or ``._@-``."""
    if not USER_NAME.fullmatch(name):
        raise UserStoreError(
            f"bad user name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )


def check_password(password: str) -> None:
    """Raise :class:`UserStoreError` when ``password`` is shorter than 8 characters."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserStoreError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")


def _checked_roles(roles: Iterable[Role | str]) -> frozenset[Role]:
    granted = frozenset(parse_role(str(role)) for role in roles)
    if not granted:
        raise UserStoreError("give a user at least one role")
    return granted


def _existing(users: Mapping[str, UserEntry], name: str) -> UserEntry:
    entry = users.get(name)
    if entry is None:
        raise UserStoreError(f"no user {name!r}")
    return entry


def _parse(data: bytes) -> Users:
    try:
        document = _UsersFile.model_validate_json(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ConfigError(USERS_FILE, key, error["msg"]) from None
    return {
        name: UserEntry(name, record.hash, frozenset(record.roles), record.created, record.changed)
        for name, record in document.users.items()
    }
