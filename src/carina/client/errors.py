"""The errors the client raises: one class per answer a caller may want to handle on its own.

Every error derives from :class:`ClientError` (itself a :class:`~carina.errors.CarinaError`, so the
command line prints it as one line) and carries the HTTP ``status`` (None when no answer came) and
the server's ``message``::

    ClientError
    ├── ServerUnreachableError    no answer: refused, timed out, TLS failure
    ├── ProtocolError             an answer that breaks the AIAA wire format
    ├── BadRequestError           400 (bad params, too few points, unreadable image), 413
    ├── AuthError                 401 (admin token, or the optional API token)
    ├── NotFoundError             404
    │   ├── ModelNotFoundError
    │   └── SessionNotFoundError
    ├── SessionExpiredError       440 (a session_id unknown or expired on an inference call)
    └── ServerError               5xx
        └── ServerBusyError       503, with ``retry_after`` seconds
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json

import httpx

from carina.errors import CarinaError
from carina.schemas import ErrorBody


class ClientError(CarinaError):
    """A call to an annotation server failed.

    Attributes:
        status: the HTTP status, or None when the server gave no answer.
        message: the server's message (its error body's lines joined), or the client's own.
        kind: the server's error type (``ModelNotFound``, ``SessionExpired``, ...), if it sent one.
    """

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None) -> None:
        self.status = status
        self.message = message
        self.kind = kind
        super().__init__(f"{message} (HTTP {status})" if status is not None else message)


class ServerUnreachableError(ClientError):
    """No answer: the connection was refused or dropped, timed out, or TLS failed."""


class ProtocolError(ClientError):
    """The server answered something the AIAA protocol does not allow (no params, no result)."""


class BadRequestError(ClientError):
    """The server refused the request's content (HTTP 400, or 413 for a too large body)."""


class AuthError(ClientError):
    """The route needs a bearer token and got none or a wrong one (HTTP 401)."""


class NotFoundError(ClientError):
    """The thing named does not exist on the server (HTTP 404)."""


class ModelNotFoundError(NotFoundError):
    """No model of that name is installed on the server."""


class SessionNotFoundError(NotFoundError):
    """No session of that id (``GET`` or ``DELETE /session/{id}``)."""


class SessionExpiredError(ClientError):
    """An inference call named a session that is unknown or expired (HTTP 440): create a new one."""


class ServerError(ClientError):
    """The server failed (HTTP 5xx)."""


class ServerBusyError(ServerError):
    """The server cannot take the request now (HTTP 503); retry after ``retry_after`` seconds.

    Attributes:
        retry_after: seconds to wait (from ``Retry-After``), or None when the server gave none.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = 503,
        kind: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, kind=kind)


#: The error of each status, when the error body's type does not say more.
_BY_STATUS: dict[int, type[ClientError]] = {
    400: BadRequestError,
    401: AuthError,
    403: AuthError,
    404: NotFoundError,
    413: BadRequestError,
    422: BadRequestError,
    440: SessionExpiredError,
    503: ServerBusyError,
}
#: The server's error types that name a more specific class than the status alone.
_BY_KIND: dict[str, type[ClientError]] = {
    "ModelNotFound": ModelNotFoundError,
    "SessionNotFound": SessionNotFoundError,
    "SessionExpired": SessionExpiredError,
}


def error_from_response(
    response: httpx.Response, *, not_found: type[NotFoundError] = NotFoundError
) -> ClientError:
    """The error for a non-200 answer, with the message of its AIAA error body.

    Args:
        response: the answer, already read.
        not_found: the class for a 404 whose body does not name its type (a model or session
            route knows what was missing).
    """
    status = response.status_code
    message, kind = _message_of(response)
    cls = _BY_KIND.get(kind or "") or _BY_STATUS.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else ClientError
    elif cls is NotFoundError:
        cls = not_found
    if issubclass(cls, ServerBusyError):
        return cls(
            message,
            status=status,
            kind=kind,
            retry_after=retry_after_seconds(response.headers.get("retry-after")),
        )
    return cls(message, status=status, kind=kind)


def _message_of(response: httpx.Response) -> tuple[str, str | None]:
    """The error body's message lines and type; a short text of the body when it is not one."""
    try:
        body = ErrorBody.model_validate(json.loads(response.content))
    except ValueError:
        text = response.content[:300].decode("utf-8", "replace").strip()
        return text or response.reason_phrase or f"HTTP {response.status_code}", None
    return "; ".join(body.error.message) or body.error.type, body.error.type


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now (seconds or an HTTP date); None when absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max((when - dt.datetime.now(dt.UTC)).total_seconds(), 0.0)
