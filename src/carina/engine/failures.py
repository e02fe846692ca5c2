"""A failure inside a model's pipeline, told as what went wrong instead of a traceback.

MONAI wraps an exception raised by a transform in ``RuntimeError("applying transform <...>")``
once per enclosing ``Compose``; :func:`model_failures` walks that chain to the step that failed and
its first cause, and raises :class:`~carina.errors.ModelRunError` naming the model, the step and
the cause (a Carina error found in the chain is raised as it is; running out of memory is
:class:`~carina.errors.ServerBusyError`). The traceback goes to the log for the operator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

from carina.errors import CarinaError, ModelRunError, ServerBusyError

log = logging.getLogger(__name__)

_STEP = re.compile(r"applying transform <(?:[\w.]+\.)?(\w+) object")
#: A path inside a message (libraries like to quote them): only its last part is shown.
_PATH = re.compile(r"(?:/[\w.+-]+)+/([\w.+-]+)")


@contextmanager
def model_failures(model: str) -> Iterator[None]:
    """Run a model inside; any exception that is not already a Carina error becomes one.

    Raises:
        ModelRunError: a step of the pipeline failed (its name and cause in the message).
        ServerBusyError: the device or the host ran out of memory.
        CarinaError: one raised inside the pipeline, unwrapped from MONAI's chain.
    """
    try:
        yield
    except CarinaError:
        raise
    except Exception as exc:
        error = explain(model, exc)
        if isinstance(error, ModelRunError):
            log.warning("model failed", extra={"model": model}, exc_info=exc)
        raise error from exc


def explain(model: str, exc: BaseException) -> CarinaError:
    """The Carina error that tells what ``exc``, raised while running ``model``, means."""
    steps: list[str] = []
    cause: BaseException = exc
    while True:
        steps += _STEP.findall(str(cause))
        following = cause.__cause__ or (None if cause.__suppress_context__ else cause.__context__)
        if following is None:
            break
        cause = following
    if isinstance(cause, CarinaError):
        return cause
    if isinstance(cause, MemoryError) or type(cause).__name__ == "OutOfMemoryError":
        return ServerBusyError(
            f"{model}: out of memory running the model on this image; retry later or send a "
            "smaller image"
        )
    where = f" in {steps[-1]}" if steps else ""
    reason = _PATH.sub(r"\1", str(cause).strip()) or "no message"
    return ModelRunError(
        f"{model}: the model failed on this image{where}: {type(cause).__name__}: {reason}"
    )
