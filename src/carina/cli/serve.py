"""``carina serve``: the annotation server."""

from __future__ import annotations

import os
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from carina.cli.console import console, err_console

if TYPE_CHECKING:
    from carina.server.run import TlsFiles


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
    datastore: str | None = typer.Option(
        None,
        help="The datastore's images: 'local' or 'dicomweb+https://host/dicom-web' (a PACS; "
        "CARINA_DICOMWEB_* settings sign in). Default: the workspace's (carina datastore source).",
    ),
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
    from carina.auth import Authenticator, check_exposure
    from carina.errors import CarinaError
    from carina.server.run import prepare_admin_token, serve
    from carina.settings import Settings

    if (ssl_certfile is None) != (ssl_keyfile is None):
        raise CarinaError("give both --ssl-certfile and --ssl-keyfile, or neither")
    if ssl_self_signed and ssl_certfile is not None:
        raise CarinaError("--ssl-self-signed and --ssl-certfile exclude each other")
    settings = Settings(workspace=workspace, host=host, port=port)
    if datastore is not None:
        settings = settings.model_copy(update={"datastore": _datastore(datastore)})
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
    with _tls_files(ssl_certfile, ssl_keyfile, ssl_self_signed) as tls:
        scheme = "https" if tls else "http"
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        console.print(f"Carina annotation server on {scheme}://{shown}:{port} (API docs at /)")
        console.print(f"sign-in: {mode}", highlight=False)
        serve(settings, workers=workers, tls=tls)


def _datastore(source: str) -> str:
    """``--datastore``, checked, and put in the environment too: the server's worker processes
    and the learning loop's open the same datastore."""
    from carina.datastore import check_source

    os.environ["CARINA_DATASTORE"] = check_source(source)
    return os.environ["CARINA_DATASTORE"]


def _tls_files(
    certfile: Path | None, keyfile: Path | None, self_signed: bool
) -> AbstractContextManager[TlsFiles | None]:
    """The TLS files to serve with: given, new self-signed ones (in a private temporary folder,
    removed when serving ends), or none."""
    from carina.server.run import TlsFiles, self_signed_tls

    if certfile is not None and keyfile is not None:
        return nullcontext(TlsFiles(certfile, keyfile))
    return self_signed_tls() if self_signed else nullcontext(None)
