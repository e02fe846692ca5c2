"""``carina users``: add, list, passwd, roles, remove, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from carina.auth import Role, UserStore, UserStoreError
from carina.cli.main import app

runner = CliRunner()
PASSWORD = "s3cret-enough"


def users(workspace: Path, *args: str, password: str | None = None) -> str:
    """Run ``carina users ARGS --workspace W``; its stdout (the command must succeed)."""
    result = runner.invoke(
        app,
        ["users", *args, "--workspace", str(workspace)],
        input=None if password is None else f"{password}\n",
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def test_add_list_passwd_roles_remove(tmp_path: Path) -> None:
    roles = ["--role", "annotator", "--role", "reviewer"]
    out = users(tmp_path, "add", "ada", *roles, "--password-stdin", password=PASSWORD)
    assert "added ada (annotator, reviewer)" in out
    listed = json.loads(users(tmp_path, "list", "--json"))
    assert [(u["name"], u["roles"]) for u in listed] == [("ada", ["annotator", "reviewer"])]
    assert "ada" in users(tmp_path, "list") and "hash" not in users(tmp_path, "list", "--json")
    store = UserStore(tmp_path)
    assert store.verify("ada", PASSWORD) is not None

    users(tmp_path, "passwd", "ada", "--password-stdin", password="a-new-password")
    assert store.verify("ada", PASSWORD) is None
    assert store.verify("ada", "a-new-password") is not None

    assert "changed the roles of ada (admin)" in users(tmp_path, "roles", "ada", "--role", "admin")
    entry = store.get("ada")
    assert entry is not None and entry.roles == {Role.ADMIN}

    assert "removed ada" in users(tmp_path, "remove", "ada")
    assert json.loads(users(tmp_path, "list", "--json")) == []


def test_add_asks_for_the_password_twice_without_echo(tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["users", "add", "bob", "--workspace", str(tmp_path)],
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    entry = UserStore(tmp_path).get("bob")
    assert entry is not None and entry.roles == {Role.USER}


def test_misuse_is_a_clear_error(tmp_path: Path) -> None:
    users(tmp_path, "add", "ada", "--password-stdin", password=PASSWORD)
    cases = [
        (["add", "bob", "--role", "owner", "--password-stdin"], PASSWORD, "unknown role 'owner'"),
        (["add", "ada", "--password-stdin"], PASSWORD, "user 'ada' exists"),
        (["add", "bob", "--password-stdin"], "short", "at least 8 characters"),
        (["remove", "bob"], None, "no user 'bob'"),
    ]
    for args, password, message in cases:
        result = runner.invoke(
            app,
            ["users", *args, "--workspace", str(tmp_path)],
            input=None if password is None else f"{password}\n",
        )
        assert result.exit_code != 0
        assert isinstance(result.exception, UserStoreError) and message in str(result.exception)
    assert [entry.name for entry in UserStore(tmp_path).users()] == ["ada"]
