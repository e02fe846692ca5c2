"""``carina info``: versions, compute devices and threads."""

from __future__ import annotations

import json

import typer

from carina.cli.console import console


def info(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Show the versions of Carina, Python, torch and MONAI, the compute devices and threads."""
    from carina.environment import describe_environment

    report = describe_environment()
    if as_json:
        console.print_json(json.dumps(report))
        return
    from rich.table import Table

    table = Table(show_header=False, box=None)
    for key, value in report["versions"].items():
        table.add_row(key, value or "[dim]not installed[/]")
    devices = report["devices"]
    table.add_row("devices", ", ".join(d["name"] for d in devices) if devices else "CPU")
    for key, value in report["threads"].items():
        table.add_row(key, str(value))
    console.print(table)
