"""The exceptions Carina raises.

Every error a user can cause derives from :class:`CarinaError`, so a command line or a server can
turn it into a clear message (or an HTTP status) in one place. Messages name the file by its base
name only, never by a full path, so that a server never leaks its folders.
"""

from __future__ import annotations

from pathlib import Path


class CarinaError(Exception):
    """Base class of every error Carina raises on purpose."""


class FileError(CarinaError):
    """An error about one file or folder: the message starts with its base name.

    Any full path inside ``reason`` (third-party libraries like to quote them) is cut down to the
    base name, so a message can be shown to a remote user.

    Args:
        path: the file or folder concerned.
        reason: what is wrong, in words a user understands.
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        name = self.path.name or str(self.path)
        for text in (str(self.path), str(self.path.parent) + "/"):
            if len(text) > 1:
                reason = reason.replace(text, name if text == str(self.path) else "")
        self.reason = reason
        super().__init__(f"{name}: {reason}")


class ImageReadError(FileError):
    """An image could not be read: unknown format, corrupt, truncated, inconsistent or too large."""


class ImageWriteError(FileError):
    """An image could not be written; the target path was left as it was."""


class UnsafeZipError(CarinaError):
    """A zip file holds an entry that escapes its folder, a link, or more data than allowed."""


class DatasetError(CarinaError):
    """A shipped dataset is unknown, or the package that ships its files is not installed."""


class ConfigError(CarinaError):
    """A configuration file is wrong: the message names the file and the key path.

    Args:
        file: the config file's name (``config_train.json``).
        key: the dotted key path inside it (``train.optimizer.args.lr``), or "" for the whole file.
        reason: what is wrong.
    """

    def __init__(self, file: str, key: str, reason: str) -> None:
        self.file = file
        self.key = key
        self.reason = reason
        where = f"{file}: {key}" if key else file
        super().__init__(f"{where}: {reason}")


class ArchiveError(CarinaError):
    """A model archive is missing a part, holds an unsafe entry or cannot be packed or unpacked."""


class UntrustedCodeError(ArchiveError):
    """An archive that arrived from elsewhere (an upload) contains code, which is never run.

    Attributes:
        findings: each piece of code found, as ``"where: what"``.
    """

    def __init__(self, findings: list[str]) -> None:
        self.findings = findings
        shown = "; ".join(findings[:5]) + (
            f"; and {len(findings) - 5} more" if len(findings) > 5 else ""
        )
        super().__init__(
            f"the archive contains code, which is refused for uploaded archives: {shown}"
        )


class GuidanceError(CarinaError):
    """Clicks or extreme points an interactive model cannot use (too few, outside the image)."""


class ModelNotFound(CarinaError):  # noqa: N818 - the name DESIGN.md gives it
    """No model of that name is installed on the server."""


class SessionNotFound(CarinaError):  # noqa: N818 - pairs with SessionExpired
    """No session of that id exists (it never did, expired or was deleted)."""


class SessionExpired(SessionNotFound):
    """An inference call named a session that is unknown or expired (HTTP 440 in AIAA)."""


class RequestError(CarinaError):
    """A request's parameters or body are malformed (wrong type, missing part, bad name)."""


class PayloadTooLargeError(RequestError):
    """A request body is larger than the server accepts."""


class AuthError(CarinaError):
    """A route that needs a bearer token was called without the right one."""


class ServerBusyError(CarinaError):
    """The inference queue is full; the client should retry after ``retry_after`` seconds."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class InferenceTimeoutError(CarinaError):
    """An inference took longer than the server's per-request limit."""


class NotSupportedError(CarinaError):
    """An optional feature of the protocol that this server does not offer (HTTP 501)."""


class CloudError(CarinaError):
    """An AWS call failed, or a stack did not reach the state asked for (the message says why)."""
