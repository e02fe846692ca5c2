"""The exceptions Carina raises.

Every error a user can cause derives from :class:`CarinaError`, so a command line or a server can
turn it into a clear message (or an HTTP status) in one place. Messages name the file by its base
name only, never by a full path, so that a server never leaks its folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar


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


class DatastoreError(CarinaError):
    """A datastore request is wrong: a label that does not fit its image, a bad tag or id, an
    unreadable image. The message names the image and what is wrong; nothing was changed."""


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


class DeidentificationError(CarinaError):
    """De-identification cannot start or cannot write: a key file that others can read or that
    is too short, an attribute to keep that DICOM does not know, a safe-private list that is
    wrong, an output folder inside an input. The message says what to fix; it never quotes a
    value from a DICOM file."""


class IdentifiedDataError(CarinaError):
    """Data that may identify a patient, refused by the PHI guard (HTTP 422). The message names
    the attributes and why, never their values, and how to fix it.

    Attributes:
        tags: the attributes found (keywords, ``file name``, ``image id``, ``header KEY``).
    """

    def __init__(self, what: str, findings: list[tuple[str, str]]) -> None:
        self.tags = sorted({tag for tag, _ in findings})
        listed = "; ".join(f"{tag}: {reason}" for tag, reason in findings[:12])
        more = f" (and {len(findings) - 12} more)" if len(findings) > 12 else ""
        super().__init__(
            f"{what} may identify a patient: {listed}{more}. De-identify it first (`carina deid "
            "INPUT -o OUT`), or ask the server's operator (CARINA_PHI_GUARD, CARINA_PHI_ALLOW)"
        )


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
            f"the archive contains code, which is refused for uploaded archives: {shown} (to "
            "trust its code, add it on the server with `carina model add`, or start the server "
            "with CARINA_ALLOW_CODE_UPLOADS=true)"
        )


class WorkCancelledError(CarinaError):
    """Work stopped because it was cancelled: its time ran out or its client went away."""


class ModelRunError(CarinaError):
    """A model failed on an image: a step of its pipeline raised (an image the model does not fit,
    a component that needs a package this installation lacks). The message names the model, the
    step and the cause."""


class GuidanceError(CarinaError):
    """Clicks or extreme points an interactive model cannot use (too few, outside the image)."""


class WorkTooLargeError(GuidanceError):
    """Work whose memory, estimated before it starts, is over the server's limit (HTTP 413): an
    image too large for the model even in windows, a window over the limit."""


class ApiError(CarinaError):
    """An error of the annotation API: what a server answers with an HTTP status, and what a
    client raises when it reads that answer. The same class serves both sides::

        ApiError
        ├── RequestError            400: malformed params or body, a bad name
        │   ├── RequestTimeoutError     408: the body stalled
        │   ├── PayloadTooLargeError    413
        │   └── TooManyRequestsError    429, with ``retry_after``
        ├── AuthError               401: no or a wrong bearer token
        ├── NotFoundError           404: no such thing (or endpoint)
        │   ├── ModelNotFound
        │   └── SessionNotFound
        │       └── SessionExpired  440 on an inference call
        ├── NotSupportedError       501: an optional feature this server does not offer
        └── ServerError             500: the server failed
            ├── ServerBusyError         503, with ``retry_after``
            ├── InferenceTimeoutError   504
            └── UpstreamError           502: a server Carina relies on (a PACS) failed
                └── UpstreamTimeoutError    504: it did not answer in time

    Other Carina errors a server meets (an unreadable image, a bad archive, unusable clicks) are
    answered with 400 as well; a client raises :class:`RequestError` for them, with ``kind``
    naming the server's error type.

    Attributes:
        http_status: the status a server answers this error with.
        message: what went wrong.
        status: the HTTP status of the answer a client read this error from; None when the error
            was raised locally (or no answer came).
        kind: the error type the server named in its answer, when one was read.
        retry_after: seconds after which the request may succeed (``Retry-After`` of a 429 or
            503); None when not known.
    """

    http_status: ClassVar[int] = 500

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        kind: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.message = message
        self.status = status
        self.kind = kind
        self.retry_after = retry_after
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)


class RequestError(ApiError):
    """A request's parameters or body are malformed (wrong type, missing part, bad name)."""

    http_status = 400


class PayloadTooLargeError(RequestError):
    """A request body is larger than the server accepts."""

    http_status = 413


class RequestTimeoutError(RequestError):
    """A request body paused longer than the server waits for its next piece."""

    http_status = 408


class TooManyRequestsError(RequestError):
    """A client sent more requests than the server's rate limit allows; retry after
    ``retry_after`` seconds."""

    http_status = 429


class AuthError(ApiError):
    """A route that needs a bearer token was called without the right one."""

    http_status = 401


class ForbiddenError(ApiError):
    """A signed-in user whose roles do not allow what the request asks."""

    http_status = 403


class ConflictError(ApiError):
    """The request conflicts with the state of what it names (a training job already running,
    an image another annotator holds)."""

    http_status = 409


class NotFoundError(ApiError):
    """The thing a request names does not exist (a model, a session, an endpoint)."""

    http_status = 404


class ModelNotFound(NotFoundError):  # noqa: N818 - the name DESIGN.md gives it
    """No model of that name is installed on the server."""


class ImageNotFound(NotFoundError):  # noqa: N818 - pairs with ModelNotFound
    """No image (or label) of that id is in the datastore."""


class SessionNotFound(NotFoundError):  # noqa: N818 - pairs with SessionExpired
    """No session of that id exists (it never did, expired or was deleted)."""


class SessionExpired(SessionNotFound):
    """An inference call named a session that is unknown or expired (HTTP 440 in AIAA)."""

    http_status = 440


class NotSupportedError(ApiError):
    """An optional feature of the protocol that this server does not offer (HTTP 501)."""

    http_status = 501


class ServerError(ApiError):
    """The server failed (HTTP 5xx)."""

    http_status = 500


class ServerBusyError(ServerError):
    """The server cannot take the request now; retry after ``retry_after`` seconds.

    Attributes:
        retry_after: seconds to wait (a client reads it from ``Retry-After``; None when absent).
    """

    http_status = 503


class InferenceTimeoutError(ServerError):
    """An inference took longer than the server's per-request limit."""

    http_status = 504


class CloudError(CarinaError):
    """An AWS call failed, or a stack did not reach the state asked for (the message says why)."""


class UpstreamError(ServerError):
    """A server Carina relies on (a PACS over DICOMweb) failed, refused or answered nonsense."""

    http_status = 502


class UpstreamTimeoutError(UpstreamError):
    """A server Carina relies on did not answer in time."""

    http_status = 504
