"""``carina client``: call an annotation server (Carina, or Clara AIAA) from the command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.client import Client, InferenceResult
    from carina.schemas import ModelEntry

app = typer.Typer(
    help="Call an annotation server: list models, segment, annotate, DeepGrow, sessions.",
    no_args_is_help=True,
)
session_app = typer.Typer(
    help="Sessions: upload an image once, then run many calls on it.", no_args_is_help=True
)
admin_app = typer.Typer(
    help="Install, inspect and remove the server's models (needs the admin token).",
    no_args_is_help=True,
)
app.add_typer(session_app, name="session")
app.add_typer(admin_app, name="admin")

IMAGE_HELP = "Image file (NIfTI, NRRD, PNG...) or DICOM series folder; omit with --session."


@dataclass(frozen=True)
class Connection:
    """The server and how to reach it, from the group's options."""

    server: str
    timeout: float
    insecure: bool
    admin_token: str | None
    api_token: str | None

    def open(self) -> Client:
        """A client for the server."""
        from carina.client import Client

        return Client(
            self.server,
            timeout=self.timeout,
            admin_token=self.admin_token,
            api_token=self.api_token,
            verify=not self.insecure,
        )


@app.callback()
def connection(
    ctx: typer.Context,
    server: str = typer.Option(
        "http://127.0.0.1:5000", "--server", envvar="CARINA_SERVER", help="The server's URL."
    ),
    admin_token: str | None = typer.Option(
        None,
        "--admin-token",
        envvar="CARINA_ADMIN_TOKEN",
        help="Bearer token of the admin routes (carina client admin ...).",
        show_default=False,
    ),
    api_token: str | None = typer.Option(
        None,
        "--api-token",
        envvar="CARINA_API_TOKEN",
        help="Bearer token of a server that requires one for every route.",
        show_default=False,
    ),
    insecure: bool = typer.Option(
        False, "--insecure", help="Accept a self-signed (unverified) TLS certificate."
    ),
    timeout: float = typer.Option(60.0, min=0.1, help="Seconds to wait for each network step."),
) -> None:
    """Call an annotation server (Carina, or Clara AIAA)."""
    ctx.obj = Connection(server, timeout, insecure, admin_token, api_token)


@app.command("health")
def health(ctx: typer.Context) -> None:
    """Check that the server is ready."""
    with _connection(ctx).open() as client:
        answer = client.health()
    console.print(f"{_connection(ctx).server}: {answer.get('status', 'ok')}", highlight=False)


@app.command("models")
def models(
    ctx: typer.Context,
    label: str | None = typer.Option(None, help="Only models with this label."),
    type_: str | None = typer.Option(None, "--type", help="Only models of this type."),
    as_json: bool = typer.Option(False, "--json", help="Print the entries as JSON."),
) -> None:
    """List the server's models: name, type, labels, description."""
    import json

    with _connection(ctx).open() as client:
        entries = client.models(label=label, type=type_)
    if as_json:
        console.print_json(json.dumps([e.model_dump() for e in entries]))
        return
    for entry in entries:
        kind = (entry.model_extra or {}).get("deepgrow")
        extra = f" ({kind})" if kind else ""
        console.print(f"[bold]{entry.name}[/]  {entry.type}{extra}", highlight=False)
        console.print(f"  labels: {', '.join(entry.labels) or '(any structure)'}", highlight=False)
        if entry.description:
            console.print(f"  {entry.description}", highlight=False, soft_wrap=True)
    if not entries:
        err_console.print("no models", highlight=False)


@app.command("segment")
def segment(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help=IMAGE_HELP, exists=True),
    model: str = typer.Option(..., "--model", "-m", help="A segmentation model's name."),
    output: Path = typer.Option(..., "--output", "-o", help="Result label map to write."),
    session: str | None = typer.Option(None, help="Run on this session's image."),
) -> None:
    """Segment IMAGE automatically; write the label map to OUTPUT."""
    from carina.client import Endpoint

    _need_image(image, session)
    with _connection(ctx).open() as client:
        entry = client.model(model)
        result = client.infer(
            Endpoint.SEGMENTATION, model, image, {}, output=output, session_id=session
        )
    console.print(summary(result, entry), highlight=False, soft_wrap=True)


@app.command("annotate")
def annotate(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help=IMAGE_HELP, exists=True),
    model: str = typer.Option(..., "--model", "-m", help="An annotation (DExtr3D) model's name."),
    point: list[str] = typer.Option(
        [],
        "--point",
        "-p",
        metavar="I,J,K",
        help="An extreme point i,j,k (voxel index); 6 or more.",
    ),
    output: Path = typer.Option(..., "--output", "-o", help="Result mask to write."),
    session: str | None = typer.Option(None, help="Run on this session's image."),
) -> None:
    """Segment the structure whose extreme points are given (DExtr3D)."""
    from carina.client import Endpoint

    _need_image(image, session)
    points = parse_points(point, "--point")
    if len(points) < 6:
        raise typer.BadParameter(
            f"6 or more extreme points needed, got {len(points)}", param_hint="--point"
        )
    with _connection(ctx).open() as client:
        entry = client.model(model)
        result = client.infer(
            Endpoint.DEXTR3D, model, image, {"points": points}, output=output, session_id=session
        )
    console.print(summary(result, entry), highlight=False, soft_wrap=True)


@app.command("deepgrow")
def deepgrow(
    ctx: typer.Context,
    image: Path | None = typer.Argument(None, help=IMAGE_HELP, exists=True),
    model: str = typer.Option(..., "--model", "-m", help="A DeepGrow model's name."),
    fg: list[str] = typer.Option(
        [], "--fg", metavar="I,J,K", help="A foreground click i,j,k; one or more."
    ),
    bg: list[str] = typer.Option([], "--bg", metavar="I,J,K", help="A background click i,j,k."),
    current_point: str | None = typer.Option(
        None, help="The click that picks the slice of a 2D model (default: the last --fg)."
    ),
    spatial_size: str | None = typer.Option(None, help="Network input size, e.g. 128,192,192."),
    output: Path = typer.Option(..., "--output", "-o", help="Result mask to write."),
    session: str | None = typer.Option(None, help="Run on this session's image."),
) -> None:
    """Segment a structure from foreground and background clicks (DeepGrow)."""
    from carina.client import Endpoint

    _need_image(image, session)
    params: dict[str, object] = {
        "foreground": parse_points(fg, "--fg"),
        "background": parse_points(bg, "--bg"),
    }
    if not params["foreground"]:
        raise typer.BadParameter("at least one foreground click needed", param_hint="--fg")
    if current_point is not None:
        params["current_point"] = parse_points([current_point], "--current-point")[0]
    if spatial_size is not None:
        params["spatial_size"] = parse_points([spatial_size], "--spatial-size")[0]
    with _connection(ctx).open() as client:
        entry = client.model(model)
        result = client.infer(
            Endpoint.DEEPGROW, model, image, params, output=output, session_id=session
        )
    console.print(summary(result, entry), highlight=False, soft_wrap=True)


@session_app.command("create")
def session_create(
    ctx: typer.Context,
    image: Path = typer.Argument(..., help=IMAGE_HELP, exists=True),
    expiry: int | None = typer.Option(
        None, min=0, help="Idle seconds before the server forgets it (default: the server's)."
    ),
) -> None:
    """Upload IMAGE; print the new session's id (on its own line, for scripts)."""
    with _connection(ctx).open() as client:
        created = client.create_session(image, expiry=expiry)
    info = created.session_info
    shape = " x ".join(str(n) for n in info.meta.get("shape", []))
    console.print(created.session_id, highlight=False)
    err_console.print(
        f"session of {image.name}{f' ({shape})' if shape else ''}; "
        f"expires after {info.expiry} s without use",
        highlight=False,
    )


@session_app.command("info")
def session_info(
    ctx: typer.Context,
    session_id: str = typer.Argument(..., help="The session's id."),
    touch: bool = typer.Option(False, help="Also refresh its last access time."),
) -> None:
    """Print a session's info as JSON."""
    with _connection(ctx).open() as client:
        info = client.session(session_id, touch=touch)
    console.print_json(info.model_dump_json())


@session_app.command("delete")
def session_delete(
    ctx: typer.Context, session_id: str = typer.Argument(..., help="The session's id.")
) -> None:
    """Delete a session and its image on the server."""
    from carina.client import SessionNotFound

    with _connection(ctx).open() as client:
        if not client.close_session(session_id):
            raise SessionNotFound(f"no session {session_id}", status=404)
    console.print(f"deleted session {session_id}", highlight=False)


@admin_app.command("install")
def admin_install(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="The model's name on the server."),
    archive: Path = typer.Argument(..., help="Archive zip.", exists=True, dir_okay=False),
) -> None:
    """Install or replace model NAME from an archive zip (validated by the server first)."""
    with _connection(ctx).open() as client:
        entry = client.install_model(name, archive)
    console.print(f"installed {entry.name} ({entry.type})", highlight=False)


@admin_app.command("config")
def admin_config(
    ctx: typer.Context, name: str = typer.Argument(..., help="The model's name.")
) -> None:
    """Print a model's config_aiaa.json."""
    import json

    with _connection(ctx).open() as client:
        config = client.model_config(name)
    console.print_json(json.dumps(config))


@admin_app.command("delete")
def admin_delete(
    ctx: typer.Context, name: str = typer.Argument(..., help="The model's name.")
) -> None:
    """Unload and remove model NAME from the server."""
    with _connection(ctx).open() as client:
        entry = client.delete_model(name)
    console.print(f"deleted {entry.name}", highlight=False)


def parse_points(values: list[str], option: str) -> list[list[int]]:
    """``["1,2,3", "4 5 6"]`` as ``[[1, 2, 3], [4, 5, 6]]`` (2 or 3 integers each).

    Raises:
        typer.BadParameter: a value that is not 2 or 3 integers.
    """
    points = []
    for value in values:
        try:
            point = [int(v) for v in value.replace(",", " ").split()]
        except ValueError:
            point = []
        if len(point) not in (2, 3):
            raise typer.BadParameter(f"{value!r} is not i,j,k", param_hint=option)
        points.append(point)
    return points


def summary(result: InferenceResult, entry: ModelEntry) -> str:
    """``wrote seg.nii.gz (labels: L2 L3 L4; 2.6 s; server: read 7 ms, infer 930 ms, ...)``."""
    details = []
    if entry.labels:
        details.append(f"labels: {' '.join(entry.labels)}")
    details.append(f"{result.seconds:.1f} s")
    if result.server_timing:
        stages = ", ".join(f"{k} {v:.0f} ms" for k, v in result.server_timing.items())
        details.append(f"server: {stages}")
    return f"wrote {result.output} ({'; '.join(details)})"


def _connection(ctx: typer.Context) -> Connection:
    found = ctx.find_object(Connection)
    if found is None:  # a command invoked without the group (tests)
        return Connection("http://127.0.0.1:5000", 60.0, False, None, None)
    return found


def _need_image(image: Path | None, session: str | None) -> None:
    if image is None and session is None:
        raise typer.BadParameter("give an IMAGE, or --session ID", param_hint="IMAGE")
