"""The errors the client raises: Carina's API errors (:class:`~carina.errors.ApiError`), read
from the server's answer, plus two of its own for answers that never came or broke the protocol.

Every error derives from :class:`~carina.errors.ApiError` (itself a
:class:`~carina.errors.CarinaError`, so the command line prints it as one line) and carries the
HTTP ``status`` (None when no answer came), the server's ``message`` and its error ``kind``::

    ApiError
    ├── ServerUnreachableError    no answer: refused, timed out, TLS failure
    ├── ProtocolError             an answer that breaks the AIAA wire format
    ├── RequestError              400 (bad params, too few points, unreadable image)
    │   ├── RequestTimeoutError   408 (the body stalled)
    │   ├── PayloadTooLargeError  413
    │   └── TooManyRequestsError  429, with ``retry_after`` seconds
    ├── AuthError                 401 (admin token, or the optional API token)
    ├── NotFoundError             404
    │   ├── ModelNotFound
    │   └── SessionNotFound
    │       └── SessionExpired    440 (a session_id unknown or expired on an inference call)
    ├── NotSupportedError         501
    └── ServerError               5xx
        ├── ServerBusyError       503, with ``retry_after`` seconds
        └── InferenceTimeoutError 504

The server raises the same classes, so code that runs a server in-process and code that calls one
over HTTP catch the same errors.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import json

import httpx

from carina.errors import (
    ApiError,
    AuthError,
    InferenceTimeoutError,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    RequestError,
    RequestTimeoutError,
    ServerBusyError,
    ServerError,
    SessionExpired,
    TooManyRequestsError,
)
from carina.schemas import ErrorBody


class ServerUnreachableError(ApiError):
    """No answer: the connection was refused or dropped, timed out, or TLS failed."""


class ProtocolError(ApiError):
    """The server answered something the AIAA protocol does not allow (no params, no result)."""


#: The error of each status, when the error body's type does not name a more specific one.
_BY_STATUS: dict[int, type[ApiError]] = {
    **{
        cls.http_status: cls
        for cls in (
            RequestError,
            PayloadTooLargeError,
            RequestTimeoutError,
            TooManyRequestsError,
            AuthError,
            NotFoundError,
            SessionExpired,
            NotSupportedError,
            ServerBusyError,
            InferenceTimeoutError,
        )
    },
    403: AuthError,
    422: RequestError,
}


def _subclasses(cls: type[ApiError]) -> dict[str, type[ApiError]]:
    found = {cls.__name__: cls}
    for sub in cls.__subclasses__():
        found.update(_subclasses(sub))
    return found


def error_from_response(
    response: httpx.Response, *, not_found: type[NotFoundError] = NotFoundError
) -> ApiError:
    """The error for a non-200 answer, with the message of its AIAA error body.

    The body's error type picks the class when it names an API error (``ModelNotFound``,
    ``SessionExpired``, ...); else the status does.

    Args:
        response: the answer, already read.
        not_found: the class for a 404 whose body does not name its type (a model or session
            route knows what was missing).
    """
    status = response.status_code
    message, kind = _message_of(response)
    cls = _subclasses(ApiError).get(kind or "")
    if cls is None or cls in (ServerUnreachableError, ProtocolError):
        cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else ApiError)
        if cls is NotFoundError:
            cls = not_found
    if issubclass(cls, ServerBusyError | TooManyRequestsError):
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
