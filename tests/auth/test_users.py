"""The users file: add, verify, change, remove; concurrent writers; private file modes."""

from __future__ import annotations

import json
import multiprocessing
import stat
from collections.abc import Callable
from multiprocessing.synchronize import Event
from pathlib import Path

import pytest
from argon2 import PasswordHasher

import carina.auth.users as users_module
from carina.auth import Role, UserStore, UserStoreError
from carina.errors import ConfigError
from tests.auth.conftest import cheap_hasher

PASSWORD = "s3cret-enough"


class CountingHasher(PasswordHasher):
    """A cheap hasher that counts the passwords it checks."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.checks = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.checks += 1
        return super().verify(hash, password)


def test_add_then_verify(store: UserStore) -> None:
    added = store.add("ada", PASSWORD, [Role.ANNOTATOR, "reviewer"])
    assert added.roles == {Role.ANNOTATOR, Role.REVIEWER}
    assert store.verify("ada", PASSWORD) == added
    assert store.get("ada") == added
    assert [entry.name for entry in store.users()] == ["ada"]


def test_users_are_sorted_by_name(store: UserStore) -> None:
    for name in ("zoe", "ada", "max"):
        store.add(name, PASSWORD, [Role.USER])
    assert [entry.name for entry in store.users()] == ["ada", "max", "zoe"]


def test_wrong_password_and_unknown_user_both_check_a_hash(tmp_path: Path) -> None:
    hasher = CountingHasher()
    store = UserStore(tmp_path, hasher=hasher)
    store.add("ada", PASSWORD, [Role.USER])
    assert store.verify("ada", "not-the-password") is None
    assert hasher.checks == 1
    assert store.verify("nobody", PASSWORD) is None
    assert hasher.checks == 2, "an unknown user's password is checked against a dummy hash"


def test_the_file_is_private_and_holds_no_password(store: UserStore) -> None:
    store.add("ada", PASSWORD, [Role.ADMIN])
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.folder.stat().st_mode) == 0o700
    text = store.path.read_text()
    assert PASSWORD not in text
    record = json.loads(text)["users"]["ada"]
    assert record["hash"].startswith("$argon2id$")
    assert record["roles"] == ["admin"]
    assert set(record) == {"hash", "roles", "created", "changed"}
    entry = store.get("ada")
    assert entry is not None and entry.password_hash not in repr(entry)


def test_set_password_replaces_the_old_one(store: UserStore) -> None:
    before = store.add("ada", PASSWORD, [Role.USER])
    after = store.set_password("ada", "another-password")
    assert store.verify("ada", PASSWORD) is None
    assert store.verify("ada", "another-password") == after
    assert after.created == before.created and after.changed > before.changed


def test_set_roles_and_remove(store: UserStore) -> None:
    store.add("ada", PASSWORD, [Role.USER])
    assert store.set_roles("ada", ["admin"]).roles == {Role.ADMIN}
    assert store.remove("ada").name == "ada"
    assert store.get("ada") is None and store.users() == []
    assert store.verify("ada", PASSWORD) is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.add("ada", PASSWORD, [Role.USER]), "user 'ada' exists"),
        (lambda s: s.add("bob", "short", [Role.USER]), "at least 8 characters"),
        (lambda s: s.add("bob", PASSWORD, ["owner"]), "unknown role 'owner'"),
        (lambda s: s.add("bob", PASSWORD, []), "at least one role"),
        (lambda s: s.add("bob smith", PASSWORD, [Role.USER]), "bad user name"),
        (lambda s: s.add("x" * 65, PASSWORD, [Role.USER]), "bad user name"),
        (lambda s: s.add("../ada", PASSWORD, [Role.USER]), "bad user name"),
        (lambda s: s.remove("bob"), "no user 'bob'"),
        (lambda s: s.set_password("bob", PASSWORD), "no user 'bob'"),
        (lambda s: s.set_roles("ada", ["root"]), "unknown role 'root'"),
    ],
)
def test_misuse_is_a_clear_error_and_changes_nothing(
    store: UserStore, call: Callable[[UserStore], object], message: str
) -> None:
    store.add("ada", PASSWORD, [Role.USER])
    before = store.path.read_bytes()
    with pytest.raises(UserStoreError, match=message):
        call(store)
    assert store.path.read_bytes() == before


def test_names_may_be_emails(store: UserStore) -> None:
    assert store.add("ada.lovelace@example.org", PASSWORD, [Role.USER]).name.endswith(".org")


def test_a_corrupt_file_names_itself_and_the_key(store: UserStore) -> None:
    store.add("ada", PASSWORD, [Role.USER])
    document = json.loads(store.path.read_text())
    document["users"]["ada"]["roles"] = ["owner"]
    store.path.write_text(json.dumps(document))
    with pytest.raises(ConfigError, match=r"users\.json: users\.ada\.roles\.0"):
        store.users()


def test_an_unchanged_file_is_parsed_once(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("ada", PASSWORD, [Role.USER])
    parsed = []
    real = users_module._parse
    monkeypatch.setattr(users_module, "_parse", lambda data: parsed.append(1) or real(data))
    for _ in range(3):
        assert store.get("ada") is not None
    assert len(parsed) == 1
    UserStore(store.folder.parent, hasher=cheap_hasher()).add("bob", PASSWORD, [Role.USER])
    assert store.get("bob") is not None, "a change by another process is seen at once"


def test_an_outdated_hash_is_replaced_on_sign_in(tmp_path: Path, hasher: PasswordHasher) -> None:
    UserStore(tmp_path, hasher=hasher).add("ada", PASSWORD, [Role.USER])
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    store = UserStore(tmp_path, hasher=stronger)
    old = store.get("ada")
    entry = store.verify("ada", PASSWORD)
    assert entry is not None and old is not None
    assert entry.password_hash != old.password_hash
    assert not stronger.check_needs_rehash(entry.password_hash)
    assert store.verify("ada", PASSWORD) == entry


def add_users(workspace: Path, prefix: str, count: int, start: Event) -> None:
    """Add ``count`` users once ``start`` is set (run in a separate process)."""
    store = UserStore(workspace, hasher=cheap_hasher())
    start.wait(30)
    for n in range(count):
        store.add(f"{prefix}{n}", PASSWORD, [Role.USER])


def test_two_processes_adding_at_once_both_land(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    processes = [
        context.Process(target=add_users, args=(tmp_path, prefix, 25, start)) for prefix in "ab"
    ]
    for process in processes:
        process.start()
    start.set()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    names = {entry.name for entry in UserStore(tmp_path).users()}
    assert names == {f"{prefix}{n}" for prefix in "ab" for n in range(25)}
    assert not list((tmp_path / "auth").glob("*.lock")), "the lock is released"
