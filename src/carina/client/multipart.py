"""Reading inference answers: multipart (params + result file), JSON, or a bare file.

The AIAA answer is ``multipart/form-data``: a ``params`` part (JSON) and at most one file part,
told apart by its ``filename`` (spec 2.4). The parser takes the boundary from ``Content-Type``
(quoted or not), tolerates a preamble and missing part headers, and uses no ``cgi``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from carina.client.errors import ProtocolError

_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')


@dataclass(frozen=True)
class Part:
    """One part of a multipart body."""

    headers: dict[str, str]
    data: bytes

    @property
    def name(self) -> str | None:
        """The ``name`` of its Content-Disposition."""
        return header_params(self.headers.get("content-disposition", "")).get("name")

    @property
    def filename(self) -> str | None:
        """The ``filename`` of its Content-Disposition (None: a text part)."""
        return header_params(self.headers.get("content-disposition", "")).get("filename")

    @property
    def is_file(self) -> bool:
        """A file part: it has a file name, or is sent as ``application/octet-stream``."""
        content_type = self.headers.get("content-type", "").lower()
        return self.filename is not None or content_type.startswith("application/octet-stream")


@dataclass(frozen=True)
class Answer:
    """What an inference call answered: the params and, if any, the result file."""

    params: dict[str, Any]
    file: bytes | None
    filename: str | None


def header_params(value: str) -> dict[str, str]:
    """The ``key=value`` parameters of a header value (``form-data; name="a"; filename="b"``)."""
    found = {}
    for key, raw in _PARAM.findall(value):
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        found[key.lower()] = raw
    return found


def parse_multipart(body: bytes, content_type: str) -> list[Part]:
    """The parts of a ``multipart/*`` body.

    Raises:
        ProtocolError: no boundary in ``content_type``, or a body not framed by it.
    """
    boundary = header_params(content_type).get("boundary")
    if not boundary:
        raise ProtocolError(f"a multipart answer without a boundary ({content_type[:100]!r})")
    delimiter = b"--" + boundary.encode("latin-1")
    start = body.find(delimiter)
    if start < 0 or (start > 0 and body[start - 2 : start] != b"\r\n"):
        raise ProtocolError("the multipart answer does not start with its boundary")
    parts = []
    position = start + len(delimiter)
    while not body.startswith(b"--", position):
        line_end = body.find(b"\r\n", position)
        end = body.find(b"\r\n" + delimiter, position)
        if line_end < 0 or end < 0:
            raise ProtocolError("the multipart answer is truncated (no closing boundary)")
        parts.append(_part(body[line_end + 2 : end]))
        position = end + 2 + len(delimiter)
    return parts


def _part(raw: bytes) -> Part:
    if not raw or raw.startswith(b"\r\n"):  # no headers
        return Part({}, raw[2:])
    head, separator, data = raw.partition(b"\r\n\r\n")
    if not separator:
        raise ProtocolError("a multipart part without the empty line after its headers")
    headers = {}
    for line in head.decode("utf-8", "replace").split("\r\n"):
        key, colon, value = line.partition(":")
        if colon:
            headers[key.strip().lower()] = value.strip()
    return Part(headers, data)


def read_answer(body: bytes, content_type: str) -> Answer:
    """The params and result file of an inference answer, whatever its type.

    ``multipart/*``: the ``params`` part (else a ``points`` part, as Clara 2.0 sent) and the first
    file part. ``application/json``: params only (``output=json``). Anything else: a bare result
    file (``output=image``).

    Raises:
        ProtocolError: a malformed body, or params that are not a JSON object.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    if kind.startswith("multipart/"):
        parts = parse_multipart(body, content_type)
        texts = {p.name: p.data for p in parts if not p.is_file and p.name}
        files = [p for p in parts if p.is_file]
        if "params" in texts:
            params = _json_object(texts["params"], "params")
        elif "points" in texts:
            params = {"points": _json(texts["points"], "points")}
        else:
            params = {}
        if not files:
            return Answer(params, None, None)
        return Answer(params, files[0].data, files[0].filename)
    if kind == "application/json" or kind.endswith("+json"):
        return Answer(_json_object(body, "the answer"), None, None)
    return Answer({}, body, None)


def _json(data: bytes, what: str) -> Any:
    try:
        return json.loads(data) if data.strip() else None
    except ValueError as exc:
        raise ProtocolError(f"{what}: not JSON ({exc})") from exc


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    value = _json(data, what)
    if value is None:
        return {}
    if isinstance(value, str):  # old servers double-encode
        value = _json(value.encode(), what)
    if not isinstance(value, dict):
        raise ProtocolError(f"{what}: a JSON object expected, not {type(value).__name__}")
    return value
