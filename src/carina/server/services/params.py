"""Request parameters as the AIAA clients send them, normalised (spec sections 2.3 and 2.6).

Old clients send point lists as JSON text inside ``params`` and numbers as strings; Slicer sends
``current_point`` as ``[[i, j, k]]`` and the test script as ``[i, j, k]``. Everything is parsed
here, once, into plain Python values; a wrong type is a :class:`RequestError` naming the key.
"""

from __future__ import annotations

import json
from typing import Any

from carina.errors import RequestError
from carina.limits import JsonLimitError, loads_json

#: The largest integer a parameter may hold (a voxel index, a size, a count).
MAX_INT = 2**31 - 1
#: The largest ``spatial_size`` edge, in voxels.
MAX_SPATIAL_SIZE = 4096


def parse_params(text: str | bytes | None) -> dict[str, Any]:
    """The ``params`` part: absent, empty, ``null`` or ``{}`` give ``{}``; else a JSON object.

    Raises:
        RequestError: not JSON, or JSON that is not an object.
    """
    if text is None:
        return {}
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    text = text.strip()
    if not text or text == "null":
        return {}
    try:
        value = loads_json(text, what="params")
    except json.JSONDecodeError as exc:
        raise RequestError(f"params: not valid JSON ({exc.msg} at column {exc.colno})") from exc
    except JsonLimitError as exc:
        raise RequestError(str(exc)) from exc
    if value is None:
        return {}
    if isinstance(value, str):  # JSON text of an object, sent as a JSON string
        return parse_params(value)
    if not isinstance(value, dict):
        raise RequestError(f"params: must be a JSON object, not {type(value).__name__}")
    return value


def _unwrap(value: Any, key: str) -> Any:
    if isinstance(value, str):
        try:
            return loads_json(value, what=f"params.{key}")
        except json.JSONDecodeError as exc:
            raise RequestError(f"params.{key}: {value[:40]!r} is not a JSON list") from exc
        except JsonLimitError as exc:
            raise RequestError(str(exc)) from exc
    return value


def as_int(value: Any, key: str) -> int:
    """An integer sent as a number, an integral float or a numeric string, of at most
    :data:`MAX_INT` in size.

    Raises:
        RequestError: not an integer, or out of range.
    """
    number = _integer(value, key)
    if abs(number) > MAX_INT:
        shown = str(number)[:20]
        raise RequestError(f"params.{key}: {shown}... is out of range (|n| <= {MAX_INT})")
    return number


def _integer(value: Any, key: str) -> int:
    if isinstance(value, bool):
        raise RequestError(f"params.{key}: must be an integer, not a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip()[:40])
        except ValueError:
            pass
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if number.is_integer():
            return int(number)
    raise RequestError(f"params.{key}: must be an integer, got {value!r}"[:200])


def as_points(value: Any, key: str, *, dims: int | tuple[int, ...] = (2, 3)) -> list[list[int]]:
    """A list of ``[i, j, k]`` voxel indices, or ``[i, j]`` on a planar image (JSON text
    accepted); a single point is a list of one. Whether the count fits the image is the model's
    check.

    Raises:
        RequestError: not a list of points of ``dims`` integers.
    """
    counts = (dims,) if isinstance(dims, int) else dims
    shown = " or ".join(str(count) for count in counts)
    value = _unwrap(value, key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError(f"params.{key}: must be a list of [i, j, k] points")
    if value and not isinstance(value[0], list):
        value = [value]
    points = []
    for n, point in enumerate(value):
        point = _unwrap(point, f"{key}[{n}]")
        if not isinstance(point, list) or len(point) not in counts:
            raise RequestError(f"params.{key}[{n}]: must be a point of {shown} integers")
        points.append([as_int(v, f"{key}[{n}]") for v in point])
    return points


def as_point(value: Any, key: str, *, dims: int | tuple[int, ...] = (2, 3)) -> list[int] | None:
    """One point, as ``[i, j, k]`` or ``[[i, j, k]]`` (or JSON text of either); None if absent."""
    points = as_points(value, key, dims=dims)
    if not points:
        return None
    if len(points) > 1:
        raise RequestError(f"params.{key}: one point expected, got {len(points)}")
    return points[0]


def as_size(value: Any, key: str) -> list[int] | None:
    """A list of positive integers (``spatial_size``), or None when absent or empty."""
    value = _unwrap(value, key)
    if value in (None, [], ""):
        return None
    if not isinstance(value, list) or not value:
        raise RequestError(f"params.{key}: must be a list of positive integers")
    size = [as_int(v, key) for v in value]
    if any(not 0 < v <= MAX_SPATIAL_SIZE for v in size):
        raise RequestError(f"params.{key}: sizes from 1 to {MAX_SPATIAL_SIZE}, got {size}"[:200])
    return size


def as_bool(value: Any, key: str) -> bool:
    """A boolean sent as JSON, as 0/1 or as text (``"true"``)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "false", "0", "no"):
        return value.strip().lower() in ("true", "1", "yes")
    raise RequestError(f"params.{key}: must be true or false, got {value!r}"[:200])
