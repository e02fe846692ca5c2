"""Running the server: uvicorn with TLS (given or self-signed), worker processes, graceful stop.

On SIGTERM uvicorn stops accepting connections, lets in-flight requests finish for up to
``grace_period`` seconds, then exits: what a rolling update of a container service needs.

TLS follows Mozilla's "intermediate" profile (see :func:`apply_intermediate_tls`). A self-signed
certificate lives in a private temporary folder that is removed when the server stops
(:func:`self_signed_tls`).
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import logging
import math
import shutil
import signal
import socket
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from carina.files import owned_folder, sweep_stale
from carina.server.services.tokens import AdminToken, admin_token
from carina.settings import Settings

log = logging.getLogger(__name__)

#: TLS 1.2 suites of Mozilla's "intermediate" profile: ECDHE key exchange, AEAD ciphers only.
INTERMEDIATE_TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
    )
)
#: TLS 1.3 suites of the profile (OpenSSL's defaults).
INTERMEDIATE_TLS13_CIPHERS = ":".join(
    ("TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256")
)
#: Key-exchange groups of the profile (OpenSSL names: X25519, prime256v1, secp384r1).
INTERMEDIATE_GROUPS = "X25519:P-256:P-384"
#: Name of the temporary folders holding self-signed keys (the owner's host and pid follow).
TLS_FOLDER_PREFIX = "carina-tls"


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


def apply_intermediate_tls(context: ssl.SSLContext) -> None:
    """Restrict ``context`` to Mozilla's "intermediate" TLS profile, as far as this Python can.

    Enforced on every supported Python: TLS 1.2 and 1.3 only; for TLS 1.2 the six ECDHE suites
    with AES-GCM or ChaCha20-Poly1305 (no CBC, no RSA key exchange, no DHE); for TLS 1.3 the
    three AEAD suites, which are OpenSSL's defaults (set explicitly where Python has
    ``SSLContext.set_ciphersuites``, 3.15+).

    Key-exchange groups (X25519, P-256, P-384) are set with ``SSLContext.set_groups`` where
    Python has it (3.15+). Python 3.11–3.14 can only set a single group (``set_ecdh_curve``),
    which would drop X25519 or P-256 and lock out clients, so there the server keeps OpenSSL's
    default groups: a client offering only P-521, X448 or (TLS 1.3) ffdhe2048–8192 is still
    accepted. None of these is weak; they are outside the profile for compatibility reasons.
    Operators can enforce the profile's groups on those Pythons with the OpenSSL configuration:
    ``Groups = X25519:P-256:P-384`` in its ``system_default`` section, in a file named by
    ``OPENSSL_CONF`` in the server's environment at start. tests/server/test_tls.py checks each
    of these with real handshakes against ``carina serve`` (the ``set_groups`` case where the
    Python running the tests has it).
    """
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.set_ciphers(INTERMEDIATE_TLS12_CIPHERS)
    set_ciphersuites = getattr(context, "set_ciphersuites", None)
    if set_ciphersuites is not None:
        set_ciphersuites(INTERMEDIATE_TLS13_CIPHERS)
    set_groups = getattr(context, "set_groups", None)
    if set_groups is not None:
        set_groups(INTERMEDIATE_GROUPS)
    else:
        log.info(
            "TLS key-exchange groups: OpenSSL's defaults (this Python cannot restrict them; "
            "set Groups = %s in the OpenSSL configuration to enforce them)",
            INTERMEDIATE_GROUPS,
        )


def intermediate_tls_context(
    config: object, default_factory: Callable[[], ssl.SSLContext]
) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory``: its usual context (certificate, ALPN), then
    :func:`apply_intermediate_tls`."""
    context = default_factory()
    apply_intermediate_tls(context)
    return context


@contextmanager
def self_signed_tls(
    *, hostname: str | None = None, temp_root: Path | None = None
) -> Iterator[TlsFiles]:
    """A self-signed certificate in a private temporary folder, removed when the block ends.

    The folder (``carina-tls@host@pid@*`` under ``temp_root``, default the temp directory) has mode
    0700 and the key 0600. It is removed on a normal return, on an error, on SIGINT and on
    SIGTERM: uvicorn ends its graceful stop by re-raising SIGTERM, which would end the process
    before any cleanup, so during the block SIGTERM raises an exception instead and, once the
    folder is gone, is raised again with the previous handler (the exit status stays "killed
    by SIGTERM"). Folders left by killed processes (SIGKILL) are swept at the next start by
    :func:`sweep_stale_tls_folders`.
    """
    root = temp_root or Path(tempfile.gettempdir())
    sweep_stale_tls_folders(root)
    with _sigterm_unwinds():
        folder = owned_folder(root, TLS_FOLDER_PREFIX)
        try:
            yield self_signed_certificate(folder, hostname=hostname)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def sweep_stale_tls_folders(root: Path) -> list[Path]:
    """Remove the self-signed key folders under ``root`` whose server process on this host is
    gone (:func:`carina.files.sweep_stale`); folders of running servers and of other hosts are
    left alone. Returns the removed folders."""
    removed = sweep_stale(root, (f"{TLS_FOLDER_PREFIX}@*",), max_age=math.inf)
    for folder in removed:
        log.info("removed the TLS folder %s of a stopped server", folder.name)
    return removed


class _Terminated(BaseException):
    """SIGTERM, raised so that cleanups run before the process ends by that signal."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second SIGTERM must not interrupt the cleanup
    raise _Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """During the block SIGTERM raises; after the block's cleanups it is raised again."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    restore = previous if previous is not None else signal.SIG_DFL
    try:
        signal.signal(signal.SIGTERM, _raise_terminated)
        yield
    except _Terminated:
        signal.signal(signal.SIGTERM, restore)
        signal.raise_signal(signal.SIGTERM)
        raise SystemExit(128 + signal.SIGTERM) from None  # the previous handler did not exit
    finally:
        signal.signal(signal.SIGTERM, restore)


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
        ssl_ciphers=INTERMEDIATE_TLS12_CIPHERS,
        ssl_context_factory=intermediate_tls_context if tls else None,
        timeout_graceful_shutdown=int(settings.grace_period),
        limit_concurrency=settings.max_connections,
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
