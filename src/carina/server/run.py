"""Running the server: uvicorn with TLS (given or self-signed), worker processes, graceful stop.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish for up to
``grace_period`` seconds, then exits: what a rolling update of a container service needs.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import socket
from dataclasses import dataclass
from pathlib import Path

from carina.server.services.tokens import AdminToken, admin_token
from carina.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    """A certificate chain and its private key (PEM files on this machine's local disk)."""

    certfile: Path
    keyfile: Path


def prepare_admin_token(settings: Settings) -> AdminToken:
    """The admin token the server will use (generated and stored on a first local start)."""
    configured = settings.admin_token.get_secret_value() if settings.admin_token else None
    return admin_token(settings.workspace.resolve(), configured)


def self_signed_certificate(folder: Path, *, hostname: str | None = None) -> TlsFiles:
    """A new self-signed certificate for ``hostname``, localhost and 127.0.0.1 in ``folder``.

    The key is written with mode 0600. ``folder`` must be local to the replica (TLS keys never go
    to the shared workspace).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    host = hostname or socket.gethostname()
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(host),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    files = TlsFiles(folder / "carina-cert.pem", folder / "carina-key.pem")
    files.keyfile.touch(mode=0o600)
    files.keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    files.certfile.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return files


def serve(settings: Settings, *, workers: int = 1, tls: TlsFiles | None = None) -> None:
    """Run the server until SIGINT/SIGTERM; ``workers`` > 1 starts that many processes on one
    socket (each with its own worker pool; models and sessions are shared through the workspace).
    """
    import uvicorn

    from carina.server.app import create_app

    _register_status_phrases()
    config = uvicorn.Config(
        functools.partial(create_app, settings),
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=workers,
        ssl_certfile=str(tls.certfile) if tls else None,
        ssl_keyfile=str(tls.keyfile) if tls else None,
        timeout_graceful_shutdown=int(settings.grace_period),
        access_log=False,
        log_config=None,
        server_header=False,
        proxy_headers=True,
        root_path=settings.root_path,
    )
    if workers <= 1:
        uvicorn.Server(config).run()
        return
    from uvicorn.supervisors import Multiprocess

    sock = config.bind_socket()
    Multiprocess(config, sockets=[sock]).run()


def _register_status_phrases() -> None:
    """Give AIAA's unregistered 440 its reason phrase ``Session Expired`` in uvicorn's answers."""
    try:
        from uvicorn.protocols.http import h11_impl
    except ImportError:  # pragma: no cover - uvicorn without h11
        return
    phrases = getattr(h11_impl, "STATUS_PHRASES", None)
    if isinstance(phrases, dict):
        phrases[440] = b"Session Expired"
