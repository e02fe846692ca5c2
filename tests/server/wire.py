"""The bytes each AIAA client sends, and readers that parse answers the way each client does."""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field

CRLF = b"\r\n"
#: NVIDIA's Python client (client_api.py): unquoted although it holds ``$``.
PYTHON_BOUNDARY = "----------lImIt_of_THE_fIle_eW_$"
POCO_BOUNDARY = "MIME_boundary_0123456789ABCDEF"
BROWSER_BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"


def python_body(
    fields: dict[str, str], files: list[tuple[str, str, bytes]], boundary: str = PYTHON_BOUNDARY
) -> bytes:
    """The Python client's hand-built body: every line followed by CRLF, then one empty line."""
    lines: list[bytes] = []
    for name, value in fields.items():
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"'.encode(),
            b"",
            value.encode(),
        ]
    for name, filename, data in files:
        lines += [
            f"--{boundary}".encode(),
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"'.encode(),
            b"Content-Type: application/octet-stream",
            b"",
            data,
        ]
    lines += [f"--{boundary}--".encode(), b""]
    return b"".join(line + CRLF for line in lines)


def python_request(method: str, target: str, port: int, body: bytes | None) -> bytes:
    """``http.client`` with the Python client's lower-case headers (HTTP/1.1)."""
    head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Accept-Encoding: identity"]
    if body is not None:
        head += [
            f"content-type: multipart/form-data; boundary={PYTHON_BOUNDARY}",
            f"content-length: {len(body)}",
        ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


def poco_request(
    method: str, target: str, params: str, files: list[tuple[str, str, bytes]]
) -> bytes:
    """The C++ client (Poco HTMLForm): HTTP/1.0, quoted boundary, Content-Length."""
    parts = [
        f'--{POCO_BOUNDARY}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'.encode()
        + params.encode()
        + CRLF
    ]
    for name, filename, data in files:
        parts.append(
            f'--{POCO_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'.encode()
            + data
            + CRLF
        )
    body = b"".join(parts) + f"--{POCO_BOUNDARY}--\r\n".encode()
    head = (
        f"{method} {target} HTTP/1.0\r\n"
        f'Content-Type: multipart/form-data; boundary="{POCO_BOUNDARY}"\r\n'
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def browser_request(
    method: str, target: str, port: int, params: str | None, files: list[tuple[str, str, bytes]]
) -> bytes:
    """A browser's ``FormData`` (OHIF, XNAT): WebKit boundary, ``params`` may be ``null``."""
    parts = []
    if params is not None:
        parts.append(
            f'--{BROWSER_BOUNDARY}\r\nContent-Disposition: form-data; name="params"\r\n\r\n'.encode()
            + params.encode()
            + CRLF
        )
    for name, filename, data in files:
        parts.append(
            f'--{BROWSER_BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/dicom\r\n\r\n'.encode()
            + data
            + CRLF
        )
    body = b"".join(parts) + f"--{BROWSER_BOUNDARY}--\r\n".encode()
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: keep-alive\r\n"
        "Origin: http://127.0.0.1:3000\r\nAccept: */*\r\nAccept-Encoding: gzip, deflate, br\r\n"
        f"Content-Type: multipart/form-data; boundary={BROWSER_BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


@dataclass
class RawResponse:
    """A response as read off the socket."""

    status_line: str
    headers: dict[str, str]
    body: bytes
    header_names: list[str] = field(default_factory=list)

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])


def send_raw(port: int, data: bytes, *, timeout: float = 120) -> RawResponse:
    """Send bytes; read one response framed by Content-Length (or to the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        buffer = b""
        while CRLF + CRLF not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            buffer += chunk
        head, _, rest = buffer.partition(CRLF + CRLF)
        lines = head.decode("latin-1").split("\r\n")
        names = [line.split(":", 1)[0] for line in lines[1:]]
        headers = {
            line.split(":", 1)[0].strip().lower(): line.split(":", 1)[1].strip()
            for line in lines[1:]
        }
        length = headers.get("content-length")
        while length is None or len(rest) < int(length):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    return RawResponse(lines[0], headers, rest, names)


@dataclass
class Part:
    headers: dict[str, str]
    data: bytes

    @property
    def name(self) -> str | None:
        found = re.search(r'name="([^"]*)"', self.headers.get("content-disposition", ""))
        return found.group(1) if found else None

    @property
    def filename(self) -> str | None:
        found = re.search(r'filename="([^"]*)"', self.headers.get("content-disposition", ""))
        return found.group(1) if found else None


def parse_multipart_strict(response: RawResponse) -> list[Part]:
    """Check rules R1-R7 of the spec and split the parts (what the Python client's cgi does,
    bounded by Content-Length, with the boundary from the Content-Type header)."""
    assert "transfer-encoding" not in response.headers, "R1: never chunked"
    assert "content-encoding" not in response.headers, "R1: never compressed"
    assert int(response.headers["content-length"]) == len(response.body), "R1: Content-Length"
    content_type = response.headers["content-type"]
    found = re.fullmatch(r"multipart/form-data; boundary=([A-Za-z0-9]+)", content_type)
    assert found, f"R2/R7: {content_type}"
    boundary = found.group(1).encode()
    body = response.body
    assert body.startswith(b"--" + boundary + CRLF), "R6: no preamble"
    assert body.endswith(b"--" + boundary + b"--" + CRLF), "close delimiter then one CRLF"
    parts = []
    for chunk in body.split(b"--" + boundary)[1:-1]:
        assert chunk.startswith(CRLF) and chunk.endswith(CRLF)
        head, _, data = chunk[2:-2].partition(CRLF + CRLF)
        headers = {
            k.strip().lower(): v.strip()
            for k, v in (line.split(":", 1) for line in head.decode().split("\r\n"))
        }
        parts.append(Part(headers, data))
    assert parts and parts[0].name == "params" and parts[0].filename is None, "R3/R4"
    assert parts[0].headers["content-type"] == "application/json", "R4"
    for part in parts[1:]:
        assert part.name == "image" and part.filename, "R5"
        assert part.headers["content-type"] == "application/octet-stream", "R5"
    assert len(parts) <= 2, "R3: at most one file part"
    return parts


def parse_multipart_poco(body: bytes) -> tuple[dict[str, object], bytes | None]:
    """The C++ client's reader: boundary from the first body line; a part is a file if its
    headers hold ``filename="`` or ``octet-stream``; the last text part and last file win."""
    first = body.split(CRLF, 1)[0]
    assert first.startswith(b"--")
    boundary = first[2:]
    text: dict[str, object] = {}
    file_data = None
    for chunk in body.split(b"--" + boundary)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk[2:-2].partition(CRLF + CRLF)
        if b'filename="' in head or b"octet-stream" in head:
            file_data = data
        else:
            text = json.loads(data)
    return text, file_data
