"""The client's wire handling, on an injected transport: requests, answers, errors, uploads."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from carina.client import (
    ApiError,
    AuthError,
    Client,
    ModelNotFound,
    PayloadTooLargeError,
    ProtocolError,
    RequestError,
    ServerBusyError,
    ServerError,
    ServerUnreachableError,
    SessionExpired,
    parse_server_timing,
)
from carina.client.multipart import parse_multipart, read_answer
from carina.errors import CarinaError

BOUNDARY = "a3f1c2d4e5b60718293a4b5c6d7e8f90"
Handler = Callable[[httpx.Request], httpx.Response]


def multipart_answer(
    params: dict[str, object], file: bytes | None, *, boundary: str = BOUNDARY
) -> bytes:
    """An answer laid out as the AIAA golden response (spec 2.4)."""
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n'
        f"Content-Type: application/json\r\n\r\n{json.dumps(params)}\r\n"
    ).encode()
    if file is not None:
        body += (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
                'filename="result.nii.gz"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + file
            + b"\r\n"
        )
    return body + f"--{boundary}--\r\n".encode()


def error_answer(status: int, message: str, kind: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": [message], "type": kind}, "success": False}
    return httpx.Response(status, json=body, headers=headers)


def client_for(handler: Handler) -> Client:
    return Client("http://aiaa.test", transport=httpx.MockTransport(handler))


def form_parts(request: httpx.Request) -> dict[str, tuple[str | None, bytes]]:
    """``{name: (filename, data)}`` of a multipart request."""
    parts = parse_multipart(request.read(), request.headers["content-type"])
    return {p.name or "": (p.filename, p.data) for p in parts}


def test_import_loads_no_heavy_library() -> None:
    code = (
        "import sys\n"
        "import carina.client\n"
        "heavy = {'torch', 'monai', 'fastapi', 'numpy', 'starlette', 'nibabel'} & set(sys.modules)\n"
        "print(sorted(heavy))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert output.stdout.strip() == "[]"


def test_client_errors_are_the_servers_errors() -> None:
    import carina.errors

    assert issubclass(ApiError, CarinaError)
    assert issubclass(ModelNotFound, ApiError) and issubclass(ServerBusyError, ServerError)
    for name in ("AuthError", "ModelNotFound", "ServerBusyError", "SessionExpired"):
        assert getattr(carina.client, name) is getattr(carina.errors, name), "one class each"


def test_deepgrow_with_session_sends_params_only(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=multipart_answer({"crop": [[0, 4], [0, 4], [0, 4]]}, b"NIFTI"),
            headers={
                "content-type": f"multipart/form-data; boundary={BOUNDARY}",
                "server-timing": "read;dur=1.5, infer;dur=930",
            },
        )

    output = tmp_path / "out" / "grow.nii.gz"
    with client_for(handler) as client:
        params = client.deepgrow(
            "dg",
            None,
            [(1, 2, 3)],
            [[4, 5, 6]],
            output=output,
            current_point=[1, 2, 3],
            session_id="s1",
        )
    assert params == {"crop": [[0, 4], [0, 4], [0, 4]]}
    assert output.read_bytes() == b"NIFTI"
    request = seen[0]
    assert request.method == "POST" and request.url.path == "/v1/deepgrow"
    assert dict(request.url.params) == {"model": "dg", "session_id": "s1"}
    assert "authorization" not in request.headers
    parts = form_parts(request)
    assert list(parts) == ["params"], "no file part with a session"
    sent = json.loads(parts["params"][1])
    assert sent == {
        "foreground": [[1, 2, 3]],
        "background": [[4, 5, 6]],
        "current_point": [1, 2, 3],
        "result_extension": ".nii.gz",
    }


def test_upload_sends_base_name_and_points(tmp_path: Path) -> None:
    image = tmp_path / "scan.nii.gz"
    image.write_bytes(b"\x1f\x8b image bytes")
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            content=multipart_answer({}, b"MASK"),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )

    points = [[i, 2, 3] for i in range(6)]
    with client_for(handler) as client:
        client.annotate("ann", image, points, output=tmp_path / "mask.nrrd")
    parts = form_parts(seen[0])
    assert seen[0].url.path == "/v1/dextr3d"
    assert parts["image"] == ("scan.nii.gz", b"\x1f\x8b image bytes")
    assert json.loads(parts["params"][1]) == {"points": points, "result_extension": ".nrrd"}


def test_inference_without_output_asks_for_json() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["output"] == "json"
        return httpx.Response(200, json={"label": "covid", "score": 0.97})

    with client_for(handler) as client:
        assert client.inference("cls", None, {}, session_id="s") == {
            "label": "covid",
            "score": 0.97,
        }


@pytest.mark.parametrize(
    ("response", "error", "status"),
    [
        (
            error_answer(440, "Session s expired or unknown", "SessionExpired"),
            SessionExpired,
            440,
        ),
        (error_answer(404, "model 'm' not found", "ModelNotFound"), ModelNotFound, 404),
        (httpx.Response(404, text="<html>Not Found</html>"), ModelNotFound, 404),
        (error_answer(401, "admin routes need a token", "AuthError"), AuthError, 401),
        (error_answer(400, "params.points: 6 needed", "GuidanceError"), RequestError, 400),
        (error_answer(413, "too large", "PayloadTooLargeError"), PayloadTooLargeError, 413),
        (httpx.Response(500, text="Internal Server Error"), ServerError, 500),
    ],
)
def test_error_answers_raise_their_class(
    tmp_path: Path, response: httpx.Response, error: type[ApiError], status: int
) -> None:
    with client_for(lambda request: response) as client, pytest.raises(error) as raised:
        client.segment("m", None, output=tmp_path / "seg.nii.gz", session_id="s")
    assert raised.value.status == status
    assert raised.value.message.split()[0] in response.text
    assert list(tmp_path.iterdir()) == []


def test_busy_server_says_when_to_retry() -> None:
    answer = error_answer(
        503, "the inference queue is full", "ServerBusyError", **{"Retry-After": "7"}
    )
    with client_for(lambda request: answer) as client, pytest.raises(ServerBusyError) as raised:
        client.inference("m", None, {}, session_id="s")
    assert raised.value.retry_after == 7.0 and raised.value.kind == "ServerBusyError"
    assert str(raised.value) == "the inference queue is full (HTTP 503)"


def test_unreachable_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with client_for(handler) as client, pytest.raises(ServerUnreachableError) as raised:
        client.models()
    assert raised.value.status is None and "connection refused" in str(raised.value)


def test_result_without_file_is_a_protocol_error_and_keeps_the_old_output(tmp_path: Path) -> None:
    output = tmp_path / "seg.nii.gz"
    output.write_bytes(b"previous")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200,
            content=multipart_answer({"points": []}, None),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
        )

    with client_for(handler) as client, pytest.raises(ProtocolError, match="no result image"):
        client.segment("m", None, output=output, session_id="s")
    assert output.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir()] == ["seg.nii.gz"]


def test_tokens_go_to_their_routes_and_prefix_is_kept(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(
            200,
            json={"name": "m", "type": "segmentation"} if request.url.path.endswith("/m") else [],
        )

    transport = httpx.MockTransport(handler)
    with Client(
        "http://aiaa.test/aiaa/", transport=transport, admin_token="adm", api_token="api"
    ) as client:
        client.models()
        client.delete_model("m")
    assert [r.url.path for r in seen] == ["/aiaa/v1/models", "/aiaa/admin/model/m"]
    assert seen[0].headers["authorization"] == "Bearer api"
    assert seen[1].headers["authorization"] == "Bearer adm"


class DrainingTransport(httpx.BaseTransport):
    """Reads the request body chunk by chunk, as a socket would, and counts it."""

    received = 0
    declared = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.declared = int(request.headers["content-length"])
        assert isinstance(request.stream, httpx.SyncByteStream)
        for chunk in request.stream:
            self.received += len(chunk)
        return httpx.Response(200, json=[[]])


def test_large_upload_streams_from_disk(tmp_path: Path) -> None:
    image = tmp_path / "large.nii"
    size = 256 * 1024**2
    with image.open("wb") as out:  # sparse: no disk space used
        out.truncate(size)
    transport = DrainingTransport()
    tracemalloc.start()
    try:
        with Client("http://aiaa.test", transport=transport) as client:
            client.mask2polygon(image)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert transport.received == transport.declared > size
    assert peak < 16 * 1024**2, f"{peak / 1024**2:.0f} MiB held for a 256 MiB upload"


def test_read_answer_variants() -> None:
    quoted = read_answer(
        b"preamble\r\n" + multipart_answer({"a": 1}, b"F", boundary="b$x") + b"\r\n\r\n",
        'multipart/form-data; boundary="b$x"',
    )
    assert quoted.params == {"a": 1} and quoted.file == b"F" and quoted.filename == "result.nii.gz"
    points = read_answer(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="points"\r\n\r\n[[1,2,3]]\r\n'
        f"--{BOUNDARY}--\r\n".encode(),
        f"multipart/form-data; boundary={BOUNDARY}",
    )
    assert points.params == {"points": [[1, 2, 3]]} and points.file is None
    bare = read_answer(b"\x1f\x8bNIFTI", "application/octet-stream")
    assert bare.params == {} and bare.file == b"\x1f\x8bNIFTI"
    with pytest.raises(ProtocolError, match="boundary"):
        read_answer(b"--x\r\n", "multipart/form-data")
    with pytest.raises(ProtocolError, match="truncated"):
        read_answer(multipart_answer({}, b"F")[:-40], f"multipart/form-data; boundary={BOUNDARY}")


def test_parse_server_timing() -> None:
    assert parse_server_timing("read;dur=1.5, pre;dur=27.2,infer;desc=x;dur=930, bad;dur=x") == {
        "read": 1.5,
        "pre": 27.2,
        "infer": 930.0,
    }
    assert parse_server_timing("") == {}
