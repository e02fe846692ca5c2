"""Model kinds behind one protocol: each kind's :class:`Runner` answers typed requests.

:data:`KINDS` registers the kinds Carina serves (segmentation, DeepGrow 2D/3D, DExtr3D) by the
serving config's ``type``. The server's registry loads runners through it
(:func:`load_runner`), every API calls them with an :class:`InferenceRequest`, and ``carina
validate`` scores an archive the way its kind is scored (:func:`validate_archive`). Nothing here
imports torch until a runner is loaded.
"""

from carina.kinds.base import (
    Guidance,
    InferenceRequest,
    InferenceResult,
    ModelKind,
    Point,
    Runner,
    check_request,
    needs_network,
    serving_file,
)
from carina.kinds.table import KINDS, Kinds, kind_of, load_runner, validate_archive

__all__ = [
    "KINDS",
    "Guidance",
    "InferenceRequest",
    "InferenceResult",
    "Kinds",
    "ModelKind",
    "Point",
    "Runner",
    "check_request",
    "kind_of",
    "load_runner",
    "needs_network",
    "serving_file",
    "validate_archive",
]
