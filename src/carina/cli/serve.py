"""``carina serve``: the annotation server."""

from __future__ import annotations

from pathlib import Path

import typer

from carina.cli.console import console, err_console


def serve(
    workspace: Path = typer.Option(
        Path("workspace"), help="Workspace: models/, sessions/, logs/ (shared by replicas)."
    ),
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0: every one)."),
    port: int = typer.Option(5000, help="Port to listen on."),
    ssl_certfile: Path | None = typer.Option(None, help="TLS certificate chain (PEM)."),
    ssl_keyfile: Path | None = typer.Option(None, help="TLS private key (PEM)."),
    ssl_self_signed: bool = typer.Option(
        False,
        help="Serve HTTPS with a new self-signed certificate (in a private temporary folder, "
        "removed on stop).",
    ),
    workers: int = typer.Option(1, min=1, help="Server processes sharing the port."),
    insecure_no_auth: bool = typer.Option(
        False,
        "--insecure-no-auth",
        help="Serve on a non-loopback address with sign-in off (refused otherwise; see "
        "docs/how-to/sign-in.md).",
    ),
) -> None:
    """Serve the AIAA-compatible annotation API for every model under WORKSPACE/models/.

    Other settings come from CARINA_* environment variables (docs/reference/settings.md).
    """
    from contextlib import AbstractContextManager, nullcontext

    from carina.auth import Authenticator, check_exposure
    from carina.errors import CarinaError
    from carina.server.run import TlsFiles, prepare_admin_token, self_signed_tls, serve
    from carina.settings import Settings

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise CarinaError("give both --ssl-certfile and --ssl-keyfile, or neither")
    if ssl_self_signed and ssl_certfile is not None:
        raise CarinaError("--ssl-self-signed and --ssl-certfile exclude each other")
    settings = Settings(workspace=workspace, host=host, port=port)
    if insecure_no_auth:
        settings = settings.model_copy(update={"insecure_no_auth": True})
    mode = Authenticator.from_settings(settings, workspace.resolve()).mode
    check_exposure(settings, mode)
    token = prepare_admin_token(settings)
    if token.generated:
        err_console.print(
            f"Admin token (shown once; kept in {token.path} with mode 0600):\n"
            f"[bold]{token.value}[/]",
            soft_wrap=True,
            highlight=False,
        )
    tls_files: AbstractContextManager[TlsFiles | None] = nullcontext(None)
    if ssl_certfile is not None and ssl_keyfile is not None:
        tls_files = nullcontext(TlsFiles(ssl_certfile, ssl_keyfile))
    elif ssl_self_signed:
        tls_files = self_signed_tls()  # a private temporary folder, removed when serving ends
    with tls_files as tls:
        scheme = "https" if tls else "http"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        console.print(f"Carina annotation server on {scheme}://{shown}:{port} (API docs at /)")
        console.print(f"sign-in: {mode}", highlight=False)
        serve(settings, workers=workers, tls=tls)
