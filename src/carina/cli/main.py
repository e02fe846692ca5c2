"""The ``carina`` entry point. Commands parse their arguments, then make one library call.

Heavy imports (numpy, nibabel, torch) happen inside command bodies, so ``carina --help`` is fast.
"""

from __future__ import annotations

import sys

import typer

from carina import __version__
from carina.cli import archive as archive_commands
from carina.cli import audit as audit_commands
from carina.cli import automl as automl_commands
from carina.cli import aws as aws_commands
from carina.cli import client as client_commands
from carina.cli import data as data_commands
from carina.cli import dataset as dataset_commands
from carina.cli import datastore as datastore_commands
from carina.cli import deid as deid_commands
from carina.cli import engine as engine_commands
from carina.cli import fl as fl_commands
from carina.cli import images as image_commands
from carina.cli import infer as infer_commands
from carina.cli import info as info_commands
from carina.cli import model as model_commands
from carina.cli import serve as serve_commands
from carina.cli import users as users_commands
from carina.cli import zoo as zoo_commands
from carina.cli.console import err_console
from carina.cli.placeholders import show_one_value_types
from carina.cli.verbosity import quiet, verbose
from carina.errors import CarinaError

show_one_value_types()

app = typer.Typer(
    name="carina",
    help="Carina: medical-imaging AI on PyTorch and MONAI (annotation server, archives, training).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("info")(info_commands.info)
app.command("convert")(image_commands.convert)
app.command("deid")(deid_commands.deid)
app.add_typer(data_commands.app, name="data")
app.add_typer(dataset_commands.app, name="dataset")
app.add_typer(datastore_commands.app, name="datastore")
app.add_typer(archive_commands.app, name="archive")
app.add_typer(zoo_commands.app, name="zoo")
app.add_typer(model_commands.app, name="model")
app.command("train")(engine_commands.train)
app.command("validate")(engine_commands.validate)
app.command("infer")(infer_commands.infer)
app.command("export")(engine_commands.export)
app.command("serve")(serve_commands.serve)
app.add_typer(users_commands.app, name="users")
app.command("audit")(audit_commands.audit)
app.add_typer(client_commands.app, name="client")
app.add_typer(aws_commands.app, name="aws")
app.add_typer(fl_commands.app, name="fl")
app.add_typer(automl_commands.app, name="automl")


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"carina {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print the version and exit.",
        callback=_show_version,
        is_eager=True,
    ),
    verbosity: int = typer.Option(
        0,
        "-v",
        "--verbose",
        count=True,
        show_default=False,
        help="Also show third-party warnings and log lines (INFO; -vv: DEBUG).",
    ),
) -> None:
    """Carina command line."""
    verbose(verbosity)


def main() -> None:
    """Run the command line; a Carina error becomes one red line and exit status 1. Third-party
    warnings and log lines stay out of the output unless ``-v`` asks for them."""
    quiet()
    try:
        app()
    except CarinaError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(1)
