"""Bounds on what a request or an uploaded file may ask of the process: JSON nesting depth,
working memory estimated before anything is allocated, and work that stops when it is cancelled.

Cancellation is cooperative: a server runs each job under :func:`cancellable` with an event it
sets when the client went away or the time ran out, and long loops (decoding chunks, sliding
window batches, slices) call :func:`check_cancelled`, which raises :class:`WorkCancelledError`
once the event is set. A worker is free again within one step of the loop it was in.

Python's JSON decoder recurses; a body of 100,000 brackets would exhaust the interpreter's stack,
and code that walks a parsed value recursively would fail the same way on a merely deep one. Every
JSON a client or an upload sends is read through :func:`loads_json`, which refuses both.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from carina.errors import WorkCancelledError, WorkTooLargeError

T = TypeVar("T")
_CANCEL: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar(
    "carina_cancel", default=None
)

#: Deepest nesting of lists and objects accepted in a request's JSON or an uploaded config.
MAX_JSON_DEPTH = 64


class JsonLimitError(ValueError):
    """A JSON document nests deeper than allowed."""


def loads_json(data: str | bytes, *, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """Parse JSON text whose lists and objects nest at most ``max_depth`` deep.

    Raises:
        JsonLimitError: nested too deep (naming ``what``).
        json.JSONDecodeError: not JSON.
    """
    try:
        value = json.loads(data)
    except RecursionError:
        raise JsonLimitError(f"{what}: nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        raise JsonLimitError(f"{what}: {exc}") from None
    if json_depth(value) > max_depth:
        raise JsonLimitError(f"{what}: nested deeper than {max_depth} levels")
    return value


def json_depth(value: Any) -> int:
    """How deep lists and objects nest in a parsed JSON value (0 for a plain value)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_work(nbytes: int, limit: int, what: str) -> None:
    """Refuse work whose memory, estimated before anything is allocated, is over ``limit``.

    Raises:
        WorkTooLargeError: naming what needs the memory, how much, and the limit (HTTP 413).
    """
    if nbytes > limit:
        raise WorkTooLargeError(
            f"{what} needs about {nbytes / 2**20:,.0f} MiB of working memory, over this "
            f"server's limit of {limit / 2**20:,.0f} MiB (CARINA_MAX_WORK_BYTES)"
        )


@contextlib.contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Run the body so that :func:`check_cancelled` inside it raises once ``event`` is set."""
    token = _CANCEL.set(event)
    try:
        yield
    finally:
        _CANCEL.reset(token)


def check_cancelled() -> None:
    """A point where cancelled work stops.

    Raises:
        WorkCancelledError: the work this thread runs was cancelled.
    """
    event = _CANCEL.get()
    if event is not None and event.is_set():
        raise WorkCancelledError("the work was cancelled (timed out or the client went away)")


def checked_calls(function: Callable[..., T]) -> Callable[..., T]:
    """``function`` with a cancellation point before each call (a network a sliding window
    inferer calls once per batch of windows)."""

    def call(*args: Any, **kwargs: Any) -> T:
        check_cancelled()
        return function(*args, **kwargs)

    return call
