"""``carina users``: the users who may sign in to the annotation server, and their roles."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console

if TYPE_CHECKING:
    from carina.auth import Role, UserEntry, UserStore

app = typer.Typer(
    help="Users of the annotation server (WORKSPACE/auth/users.json): add, list, passwords, "
    "roles. With CARINA_AUTH=auto the server asks for sign-in once the file has a user.",
    no_args_is_help=True,
)
WORKSPACE = typer.Option(Path("workspace"), help="Workspace folder (auth/ inside).")
NAME = typer.Argument(..., help="The user's name.")
ROLES = typer.Option(
    ["user"],
    "--role",
    metavar="ROLE",
    help="user, annotator, reviewer or admin (repeatable); admin > reviewer > annotator > user.",
)
PASSWORD_STDIN = typer.Option(
    False, "--password-stdin", help="Read the password from the first line of stdin."
)


def _store(workspace: Path) -> UserStore:
    from carina.auth import UserStore

    return UserStore(workspace)


def _password(from_stdin: bool) -> str:
    """The password from stdin's first line, or asked twice without echo."""
    if from_stdin:
        return typer.get_text_stream("stdin").readline().rstrip("\r\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("add")
def add(
    name: str = typer.Argument(..., help="User name: letters, digits, '.', '_', '@', '-'."),
    role: list[str] = ROLES,
    password_stdin: bool = PASSWORD_STDIN,
    workspace: Path = WORKSPACE,
) -> None:
    """Add a user (asks for the password twice unless --password-stdin)."""
    store = _store(workspace)
    entry = store.add(name, _password(password_stdin), role)
    console.print(f"added {_shown(entry)}", highlight=False, markup=False)


@app.command("list")
def list_users(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    workspace: Path = WORKSPACE,
) -> None:
    """List the users with their roles and when they were added (never a password hash)."""
    entries = _store(workspace).users()
    rows = [
        {"name": e.name, "roles": _roles(e.roles), "created": e.created.isoformat()}
        for e in entries
    ]
    if as_json:
        console.print_json(json.dumps(rows))
        return
    from rich.table import Table

    table = Table("name", "roles", "created", box=None)
    for e in entries:
        table.add_row(e.name, ", ".join(_roles(e.roles)), f"{e.created:%Y-%m-%d %H:%M}")
    console.print(table)


@app.command("remove")
def remove(name: str = NAME, workspace: Path = WORKSPACE) -> None:
    """Remove a user; their tokens stop working at once."""
    entry = _store(workspace).remove(name)
    console.print(f"removed {entry.name}", highlight=False, markup=False)


@app.command("passwd")
def passwd(
    name: str = NAME,
    password_stdin: bool = PASSWORD_STDIN,
    workspace: Path = WORKSPACE,
) -> None:
    """Change a user's password; their tokens stop working at once."""
    store = _store(workspace)
    entry = store.set_password(name, _password(password_stdin))
    console.print(f"changed the password of {entry.name}", highlight=False, markup=False)


@app.command("roles")
def roles(
    name: str = NAME,
    role: list[str] = typer.Option(
        ..., "--role", metavar="ROLE", help="The new roles (repeatable)."
    ),
    workspace: Path = WORKSPACE,
) -> None:
    """Replace a user's roles (their next request has the new ones)."""
    entry = _store(workspace).set_roles(name, role)
    console.print(f"changed the roles of {_shown(entry)}", highlight=False, markup=False)


def _roles(granted: frozenset[Role]) -> list[str]:
    from carina.auth.roles import ordered

    return [str(role) for role in ordered(granted)]


def _shown(entry: UserEntry) -> str:
    return f"{entry.name} ({', '.join(_roles(entry.roles))})"
