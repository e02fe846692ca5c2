"""A Python client of the AIAA annotation API (Carina, Clara AIAA): ``Client`` and its errors.

Light on purpose: httpx and pydantic only (no torch, MONAI, FastAPI or NumPy), so a viewer plug-in
or a script can import it anywhere::

    from pathlib import Path
    from carina.client import Client

    with Client("http://127.0.0.1:5000") as client:
        params = client.segment("spine_ct_vertebrae", Path("ct.nii.gz"), output=Path("seg.nii.gz"))
"""

from carina.client.client import Client, Endpoint, InferenceResult, parse_server_timing
from carina.client.errors import ProtocolError, ServerUnreachableError
from carina.errors import (
    ApiError,
    AuthError,
    InferenceTimeoutError,
    ModelNotFound,
    NotFoundError,
    NotSupportedError,
    PayloadTooLargeError,
    RequestError,
    ServerBusyError,
    ServerError,
    SessionExpired,
    SessionNotFound,
)

__all__ = [
    "ApiError",
    "AuthError",
    "Client",
    "Endpoint",
    "InferenceResult",
    "InferenceTimeoutError",
    "ModelNotFound",
    "NotFoundError",
    "NotSupportedError",
    "PayloadTooLargeError",
    "ProtocolError",
    "RequestError",
    "ServerBusyError",
    "ServerError",
    "ServerUnreachableError",
    "SessionExpired",
    "SessionNotFound",
    "parse_server_timing",
]
