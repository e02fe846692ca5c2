"""TLS of ``carina serve``: Mozilla's "intermediate" profile checked with real handshakes, and the
self-signed key's private folder, removed on stop and swept after a kill."""

from __future__ import annotations

import signal
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from carina.files import owner_tag
from carina.server.run import (
    INTERMEDIATE_TLS12_CIPHERS,
    TLS_FOLDER_PREFIX,
    apply_intermediate_tls,
    self_signed_tls,
    sweep_stale_tls_folders,
)
from tests.servers import ServerProcess, dead_pid, start_server

CAN_SET_GROUPS = hasattr(ssl.SSLContext, "set_groups")
PROFILE_GROUPS = ("X25519", "prime256v1", "secp384r1")
OTHER_GROUPS = ("secp521r1", "X448", "ffdhe2048")
# Enforces the profile's groups for a whole process (the route for Python < 3.15).
OPENSSL_GROUPS_CONF = """openssl_conf = openssl_init
[openssl_init]
ssl_conf = ssl_sect
[ssl_sect]
system_default = system_default_sect
[system_default_sect]
Groups = X25519:P-256:P-384
"""


def client_context(
    *,
    versions: tuple[ssl.TLSVersion, ssl.TLSVersion] | None = None,
    ciphers: str | None = None,
    group: str | None = None,
) -> ssl.SSLContext:
    """A client that offers only the given versions, TLS 1.2 ciphers or key-exchange group."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if versions:
        context.minimum_version, context.maximum_version = versions
    if ciphers:
        context.set_ciphers(ciphers)
    if group:
        context.set_ecdh_curve(group)  # OpenSSL 3: the only group offered
    return context


def handshake(server: ServerProcess, context: ssl.SSLContext) -> tuple[str, str]:
    """The TLS version and cipher suite that ``server`` agrees to with ``context``."""
    with (
        socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as connection,
    ):
        return str(connection.version()), connection.cipher()[0]  # type: ignore[index]


TLS12 = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)
TLS13 = (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3)


def start_tls_server(
    root: Path, *, env: dict[str, str] | None = None, args: tuple[str, ...] = ()
) -> ServerProcess:
    """``carina serve --ssl-self-signed`` on an empty workspace, with ``root/tmp`` as its temp
    directory."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    environment = {"TMPDIR": str(root / "tmp"), **(env or {})}
    return start_server(
        root / "workspace", args=["--ssl-self-signed", *args], tls=True, env=environment
    )


def tls_folders(root: Path) -> list[Path]:
    return sorted((root / "tmp").glob(f"{TLS_FOLDER_PREFIX}*"))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_tls_server(tmp_path_factory.mktemp("tls"))
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize(
    "cipher",
    [
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ],
)
def test_tls12_aead_suites_are_accepted(tls_server: ServerProcess, cipher: str) -> None:
    assert handshake(tls_server, client_context(versions=TLS12, ciphers=cipher)) == (
        "TLSv1.2",
        cipher,
    )


@pytest.mark.integration
def test_tls13_is_accepted(tls_server: ServerProcess) -> None:
    version, cipher = handshake(tls_server, client_context(versions=TLS13))
    assert version == "TLSv1.3"
    assert cipher in (
        "TLS_AES_128_GCM_SHA256",
        "TLS_AES_256_GCM_SHA384",
        "TLS_CHACHA20_POLY1305_SHA256",
    )


@pytest.mark.integration
@pytest.mark.parametrize(
    "cipher", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256"]
)
def test_cbc_suites_are_refused(tls_server: ServerProcess, cipher: str) -> None:
    with pytest.raises(ssl.SSLError):  # an alert, or the server closing the connection
        handshake(tls_server, client_context(versions=TLS12, ciphers=cipher))


@pytest.mark.integration
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")
@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_before_1_2_is_refused(tls_server: ServerProcess, version: str) -> None:
    # SECLEVEL=0 lets this client really offer TLS 1.0/1.1 (OpenSSL 3 refuses them above it).
    old = ssl.TLSVersion[version]
    old_client = client_context(versions=(old, old), ciphers="DEFAULT:@SECLEVEL=0")
    with pytest.raises(ssl.SSLError):
        handshake(tls_server, old_client)


@pytest.mark.integration
@pytest.mark.parametrize("group", PROFILE_GROUPS)
def test_profile_groups_are_accepted(tls_server: ServerProcess, group: str) -> None:
    assert handshake(tls_server, client_context(versions=TLS13, group=group))[0] == "TLSv1.3"


@pytest.mark.integration
@pytest.mark.skipif(not CAN_SET_GROUPS, reason="SSLContext.set_groups needs Python 3.15")
@pytest.mark.parametrize("group", OTHER_GROUPS)
def test_groups_outside_the_profile_are_refused(tls_server: ServerProcess, group: str) -> None:
    with pytest.raises(ssl.SSLError):  # an alert, or the server closing the connection
        handshake(tls_server, client_context(versions=TLS13, group=group))


@pytest.mark.integration
def test_openssl_configuration_enforces_the_groups(tmp_path: Path) -> None:
    """The documented route on Pythons without ``set_groups``: OpenSSL's ``Groups`` setting."""
    conf = tmp_path / "openssl.cnf"
    conf.write_text(OPENSSL_GROUPS_CONF)
    server = start_tls_server(tmp_path, env={"OPENSSL_CONF": str(conf)})
    try:
        for group in PROFILE_GROUPS:
            assert handshake(server, client_context(versions=TLS13, group=group))[0] == "TLSv1.3"
        for group in OTHER_GROUPS:
            with pytest.raises(ssl.SSLError):  # an alert, or the server closing the connection
                handshake(server, client_context(versions=TLS13, group=group))
    finally:
        server.stop()


@pytest.mark.integration
@pytest.mark.parametrize(
    ("sig", "workers", "status"),
    [
        (signal.SIGTERM, "1", -signal.SIGTERM),  # uvicorn re-raises the signal after its stop
        (signal.SIGINT, "1", 128 + signal.SIGINT),  # KeyboardInterrupt, as the CLI reports it
        (signal.SIGTERM, "2", 0),  # the supervisor of several workers returns normally
    ],
)
def test_stop_removes_the_key_folder(tmp_path: Path, sig: int, workers: str, status: int) -> None:
    server = start_tls_server(tmp_path, args=("--workers", workers))
    try:
        [folder] = tls_folders(tmp_path)
        assert f"@{server.process.pid}@" in folder.name
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "carina-key.pem").stat().st_mode & 0o777 == 0o600
    finally:
        code = server.stop(sig)
    assert code == status, server.log.read_text()[-2000:]  # it stopped by itself, not by SIGKILL
    assert tls_folders(tmp_path) == []


@pytest.mark.integration
def test_folder_of_a_killed_server_is_swept_at_the_next_start(tmp_path: Path) -> None:
    killed = start_tls_server(tmp_path)
    killed.stop(signal.SIGKILL)
    [left] = tls_folders(tmp_path)
    server = start_tls_server(tmp_path)
    try:
        [current] = tls_folders(tmp_path)
        assert current != left
        assert f"@{server.process.pid}@" in current.name
    finally:
        server.stop()


def test_sweep_removes_only_folders_of_dead_processes_of_this_host(tmp_path: Path) -> None:
    with self_signed_tls(temp_root=tmp_path) as live:
        folder = live.keyfile.parent
        host = owner_tag().split("@")[1]
        stale = tmp_path / f"{TLS_FOLDER_PREFIX}@{host}@{dead_pid()}@stale"
        foreign = tmp_path / f"{TLS_FOLDER_PREFIX}@another-host@{dead_pid()}@foreign"
        untagged = tmp_path / f"{TLS_FOLDER_PREFIX}-abc123"
        for made in (stale, foreign, untagged):
            made.mkdir()
        assert sweep_stale_tls_folders(tmp_path) == [stale]
        assert sorted(tmp_path.iterdir()) == sorted([folder, foreign, untagged])


def test_self_signed_folder_is_private_and_removed_on_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), self_signed_tls(temp_root=tmp_path) as tls:
        folder = tls.keyfile.parent
        assert folder.parent == tmp_path
        assert folder.stat().st_mode & 0o777 == 0o700
        assert tls.keyfile.stat().st_mode & 0o777 == 0o600
        raise RuntimeError("the server failed")
    assert list(tmp_path.iterdir()) == []


def test_intermediate_profile_offers_only_aead_suites_on_tls12_and_13() -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    apply_intermediate_tls(context)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.maximum_version == ssl.TLSVersion.TLSv1_3
    suites = context.get_ciphers()
    tls12 = {s["name"] for s in suites if s["protocol"] == "TLSv1.2"}
    assert tls12 == set(INTERMEDIATE_TLS12_CIPHERS.split(":"))
    assert all(s["aead"] for s in suites), [s["name"] for s in suites if not s["aead"]]
